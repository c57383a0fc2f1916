"""cdcrouter.stack"""
