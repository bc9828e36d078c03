/* fuzz_image.c: PNG and JPEG decoding (ct_image_decode picks the decoder
 * by signature) and, for what decodes, both of CLIP's transforms at a
 * small size. */
#include <cliptrain/image.h>

#include "fuzz-util.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  GError *err = NULL;
  CtImage *im = ct_image_decode(data, size, "fuzz", &err);
  if (!im) {
    fuzz_check_error(&err, "fuzz");
    return 0;
  }
  if (im->width <= 0 || im->height <= 0)
    abort();
  static const float mean[3] = CT_CLIP_MEAN, std[3] = CT_CLIP_STD;
  float out[3 * 7 * 7];
  ct_image_resize_center_crop(im, 7, mean, std, out);
  CtRng rng;
  ct_rng_init(&rng, size);
  ct_image_random_resized_crop(im, 7, 0.08, 3.0 / 4, 4.0 / 3, TRUE, &rng, mean, std, out);
  ct_image_free(im);
  return 0;
}
