"""The study's reproduction (docs/protocol.md sections 9 and 10)."""
