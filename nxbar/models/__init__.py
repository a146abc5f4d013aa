"""VGG models with hand-written forward and backward passes (SPEC section 2)."""
