/* image.h: decoded images and CLIP's image transforms.
 *
 * A CtImage is 8-bit RGB, row-major, (height, width, 3).  Grey, grey+alpha,
 * palette and RGBA inputs become RGB (alpha is dropped, as PIL's
 * convert("RGB") does).  Transforms write (3, size, size) float32 planes,
 * normalised per channel: (pixel / 255 - mean) / std. */
#ifndef CLIPTRAIN_IMAGE_H
#define CLIPTRAIN_IMAGE_H

#include <cliptrain/ct-common.h>
#include <cliptrain/rng.h>

G_BEGIN_DECLS

typedef struct {
  int width, height;
  uint8_t *pixels; /* (height, width, 3), owned */
} CtImage;

/* CLIP's normalisation constants. */
#define CT_CLIP_MEAN { 0.48145466f, 0.4578275f, 0.40821073f }
#define CT_CLIP_STD { 0.26862954f, 0.26130258f, 0.27577711f }

/* An uninitialised W x H image.  (transfer full) */
CT_API CtImage *ct_image_new(int width, int height);
CT_API void ct_image_free(CtImage *image);
/* Grey bytes (height, width) as RGB.  (transfer full) */
CT_API CtImage *ct_image_new_from_gray(const uint8_t *gray, int width, int height);

/* Decode a PNG (libpng) or JPEG (libjpeg-turbo) held in memory, chosen by
 * its signature.  NAME is used in errors ("NAME: truncated PNG data").
 * Never reads out of bounds on truncated or corrupt data.  (transfer full) */
CT_API CtImage *ct_image_decode(const void *data, size_t len, const char *name, GError **error);
/* Read and decode PATH.  (transfer full) */
CT_API CtImage *ct_image_load(const char *path, GError **error);

/* CLIP's eval preprocessing: resize the shorter side to SIZE with bicubic
 * interpolation as PIL does it (antialiased when shrinking), center crop
 * SIZE x SIZE (PIL/torchvision rounding), normalise.
 * out: (3, size, size). */
CT_API void ct_image_resize_center_crop(const CtImage *image, int size, const float mean[3],
                                        const float std[3], float *out);

/* torchvision's RandomResizedCrop(size, scale=(min_scale, 1), ratio=(ratio_lo,
 * ratio_hi)) with bicubic resampling, then an optional horizontal flip
 * with probability 0.5 when HFLIP, then normalisation.  Every random draw
 * comes from RNG.  out: (3, size, size). */
CT_API void ct_image_random_resized_crop(const CtImage *image, int size, double min_scale,
                                         double ratio_lo, double ratio_hi, gboolean hflip,
                                         CtRng *rng, const float mean[3], const float std[3],
                                         float *out);

G_END_DECLS

#endif
