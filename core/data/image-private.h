/* image-private.h: the steps of the image transforms, shared by
 * core/data/image-transform.c and tests/unit/test-image.c.  Not installed. */
#ifndef CT_IMAGE_PRIVATE_H
#define CT_IMAGE_PRIVATE_H

#include <cliptrain/image.h>

/* The box (top, left, height, width) resized to out_width x out_height with
 * PIL's bicubic resampling.  (transfer full) */
CtImage *ct_image_resized_crop_u8(const CtImage *image, int top, int left, int height, int width,
                                  int out_width, int out_height);
/* Shorter side to SIZE, then the SIZE x SIZE center.  (transfer full) */
CtImage *ct_image_resize_center_crop_u8(const CtImage *image, int size);
/* torchvision's RandomResizedCrop.get_params with draws from RNG. */
void ct_image_random_resized_crop_box(const CtImage *image, double min_scale, double ratio_lo,
                                      double ratio_hi, CtRng *rng, int *top, int *left,
                                      int *height, int *width);
/* To (3, H, W) floats, (x / 255 - mean) / std, optionally flipped. */
void ct_image_normalize(const CtImage *image, gboolean hflip, const float mean[3],
                        const float std[3], float *out);

#endif
