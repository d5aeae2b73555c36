"""sysgate.compiler"""
