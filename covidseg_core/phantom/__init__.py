"""A synthetic chest CT with COVID-19 lesions, for the demo study (no Qt, no files).

  frame.py         coordinates in units (a 128-pixel slice's pixels) and z as t (0 liver dome .. 1 apex), shapes
  tissues.py       HU of each tissue
  thorax.py        body outline, skin, fat, muscle, ribs, sternum, scapulae, clavicles, spine, table
  mediastinum.py   heart, great vessels, trachea, oesophagus, mediastinal fat; diaphragm, liver, stomach, spleen
  trees.py         vessel and bronchial trees in 3D and the fraction of each slab they fill
  lesions.py       ground-glass opacities and consolidations
  scanner.py       partial-volume blur and correlated noise
  chest.py         chest_ct(): all of it, slab by slab, with the ground truth
"""
from .chest import chest_ct

__all__ = ["chest_ct"]
