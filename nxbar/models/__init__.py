"""VGG models with hand-written forward and backward passes (docs/protocol.md section 2)."""
