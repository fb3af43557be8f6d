"""The drift monitor: prediction log (and labels) -> windowed drift statistics and alerts."""
