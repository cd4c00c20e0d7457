"""Stage 1: videos and frame folders -> clip sampling -> frozen backbone -> feature cache."""
