"""Example Propylon plugins (docs/plugins.md): ``jsonRewrite``."""
