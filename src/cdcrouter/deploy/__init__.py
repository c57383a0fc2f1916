"""cdcrouter.deploy"""
