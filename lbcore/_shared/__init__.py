"""What both twins of the balancers share, off the hot path."""
