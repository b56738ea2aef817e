"""Hooks for serving stacks that can call Python (LiteLLM); everything else goes through the gateway."""
