"""cdcrouter.ir"""
