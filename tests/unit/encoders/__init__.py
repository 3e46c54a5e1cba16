"""Tests of palrm.encoders."""
