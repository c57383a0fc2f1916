"""cdcrouter.backends"""
