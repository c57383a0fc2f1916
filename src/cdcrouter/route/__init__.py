"""cdcrouter.route"""
