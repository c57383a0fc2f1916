"""cdcrouter.filters"""
