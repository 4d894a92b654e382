"""Sweep: export and validate many subnets of one supernet in one run, resumable, indexed."""
