"""How good the poses are: mTRE/GFR metrics, replaying bags, the benchmark, speed, and the
report with its figures (also the overlay the node publishes).
"""
