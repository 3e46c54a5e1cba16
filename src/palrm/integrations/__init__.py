"""Adapters that put palrm rewards where RLHF happens (TRL; OpenRLHF talks to `palrm serve`)."""
