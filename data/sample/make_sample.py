import nibabel as nib, numpy as np, scipy.ndimage as ndi, sys, gzip
ct = nib.load('/work/shared/data/chest-ct/ct.nii.gz'); lab = nib.load('/work/shared/data/chest-ct/labels.nii.gz')
a = ct.get_fdata(); l = np.asarray(lab.dataobj)
sp = np.array(ct.header.get_zooms()[:3]); print(a.shape, sp, nib.aff2axcodes(ct.affine))
new_sp = np.array([float(sys.argv[1])]*2 + [2.5])
body = a > -500
idx = np.argwhere(body); lo = np.maximum(idx.min(0) - 3, 0); hi = np.minimum(idx.max(0) + 4, a.shape)
print('crop', lo, hi)
a = a[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]; l = l[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
zoom = sp / new_sp
a2 = ndi.zoom(a, zoom, order=1); l2 = ndi.zoom(l, zoom, order=0)
aff = ct.affine.copy(); aff[:3, 3] = ct.affine[:3, :3] @ lo + ct.affine[:3, 3]
aff[:3, :3] = ct.affine[:3, :3] @ np.diag((np.array(a.shape)-1)/(np.array(a2.shape)-1))
# voxel centre shift: zoom maps corner-aligned grids approx; keep simple (first voxel centre same)
a2 = np.clip(np.round(a2), -1024, 3071).astype(np.int16)
img = nib.Nifti1Image(a2, aff); img.set_qform(aff, 1); img.set_sform(aff, 1)
nib.save(img, '/tmp/sample_ct.nii.gz')
li = nib.Nifti1Image(l2.astype(np.uint8), aff); li.set_qform(aff, 1); li.set_sform(aff, 1)
nib.save(li, '/tmp/sample_labels.nii.gz')
print(a2.shape, sorted(set(np.unique(l2)) )[:5], len(np.unique(l2)))
