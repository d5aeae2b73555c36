"""sysgate.handlers"""
