"""Attenuation of each tissue in HU (unenhanced chest CT), in one place."""

AIR = -1000.0
LUNG = -870.0            # aerated parenchyma; dependent (posterior) lung is denser, see lungs.py
FAT = -100.0
MEDIASTINAL_FAT = -90.0
SKIN = 20.0
MUSCLE = 45.0
BLOOD = 40.0             # heart, aorta, pulmonary vessels (no contrast)
SOFT = 35.0              # oesophagus, lymph nodes, bowel
AIRWAY_WALL = 30.0
LIVER = 60.0
SPLEEN = 48.0
STOMACH = 20.0
CSF = 15.0
DISC = 80.0
CARTILAGE = 130.0
MARROW = 230.0           # cancellous bone
CORTEX = 1100.0          # cortical bone; a 1-pixel rim reads 700-900 HU after partial-volume blur
TABLE = 120.0
TABLE_CORE = -600.0
