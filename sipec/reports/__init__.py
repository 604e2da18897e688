"""Reports built from results: position density maps, ethograms and bout statistics."""
