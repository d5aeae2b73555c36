"""sysgate.agent"""
