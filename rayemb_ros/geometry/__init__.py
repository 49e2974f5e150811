"""Geometry: the camera model and frame conventions, C-arm poses, PnP, and CT volumes.

The lowest layer: plain maths on numpy/torch arrays, no I/O beyond reading a CT.
"""
