"""Networks: ResNet encoders, U-Net depth decoder, pose net, segmentation heads, guidance modules.

Each module is imported explicitly (`from semdepth.models.encoder import ResnetEncoder`) so that
importing the package stays cheap and one helper's module never breaks another's.
"""
