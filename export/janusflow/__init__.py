"""JanusFlow-1.3B: rectified-flow image generation on an SDXL-VAE latent around the Janus LLM."""
