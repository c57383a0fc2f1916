"""cdcrouter.config"""
