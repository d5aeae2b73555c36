"""sysgate.supervisor"""
