"""cdcrouter.consumer"""
