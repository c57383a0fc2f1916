"""cdcrouter demo: the whole pipeline on the local stack."""
