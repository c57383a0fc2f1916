"""cdcrouter.capture"""
