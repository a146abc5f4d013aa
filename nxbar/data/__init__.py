"""Image data sets as uint8 arrays (`load`)."""
