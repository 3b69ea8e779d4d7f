"""Minimal stand-in for torchio's ScalarImage/LabelMap, enough for nanodrr's
Subject.from_filepath on the device machine (torchio pulls SimpleITK, too large to carry).
Reads with nibabel: data (1, W, H, D) float32 with scl_slope/inter applied, RAS affine,
get_center() = affine · (shape − 1)/2 as torchio computes it."""
import nibabel as nib
import numpy as np
import torch


class ScalarImage:
    def __init__(self, path):
        img = nib.load(str(path))
        self.affine = np.asarray(img.affine, dtype=np.float64)
        data = np.asarray(img.get_fdata(dtype=np.float32))
        self.spatial_shape = data.shape[:3]
        self.data = torch.from_numpy(np.ascontiguousarray(data[..., None] if data.ndim == 3 else data)).permute(3, 0, 1, 2)

    def get_center(self):
        centre = (np.asarray(self.spatial_shape, dtype=np.float64) - 1) / 2
        return tuple((self.affine @ np.append(centre, 1.0))[:3])


LabelMap = ScalarImage
