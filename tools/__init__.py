"""The tool catalog, installed as ``agentrl.tools``."""
