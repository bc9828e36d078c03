/* image-transform.c: CLIP's image preprocessing, pixel-exact with
 * torchvision's transforms on a PIL image (Pillow's Image.resize with
 * BICUBIC).
 *
 * Pillow resamples in two separable passes, horizontal then vertical, each
 * rounding to uint8.  For every output sample it centres the filter at
 * (i + 0.5) * scale in input coordinates, widens the bicubic kernel
 * (a = -0.5, support 2) by the scale when shrinking (which antialiases),
 * takes the input samples whose centres fall inside the support (rounded
 * at both ends, clamped to the image), normalises the weights to sum 1 and
 * turns them into fixed point with 22 fractional bits (32 - 8 - 2), rounded
 * half away from zero.  A sample is then (2^21 + sum(weight * pixel)) >> 22
 * clamped to 0..255.  The code below reproduces each of those steps with
 * the same double-precision expressions, so it gives the same bytes.
 *
 * Each output sample depends only on its own index, so a crop of the
 * resized image is computed by resampling only the cropped rows and
 * columns (and the horizontal pass only visits the input rows the
 * vertical pass will read).  A grey crop (R = G = B, as every decoded
 * grey image is) is resampled as one channel and copied to three.  The
 * 32-bit sums cannot overflow: the positive weights of a sample sum to
 * less than 1.2 (the negative ones to more than -0.2), so a sum stays
 * within 2^21 + 255 * 1.2 * 2^22 < 2^31.
 *
 * Because decoding already made the image RGB, the result equals CLIP's
 * preprocess(Image.open(f).convert("RGB")), which is CLIP's
 * preprocess(Image.open(f)) for grey ("L") and RGB files.  For palette and
 * 1-bit files PIL's resize falls back to NEAREST, and RGBA/LA resizes with
 * premultiplied alpha; we resample the converted RGB instead.
 *
 * torchvision's geometry:
 *   Resize(size): the shorter side becomes SIZE, the longer
 *     int(size * long / short); nothing happens if the size is unchanged.
 *   CenterCrop(size): top = int(round((h - size) / 2.0)), with Python's
 *     round-half-to-even, and the same for left.
 *   RandomResizedCrop.get_params: see ct_image_random_resized_crop_box().
 *   ToTensor + Normalize: (pixel / 255 - mean) / std in float32. */
#include "config.h"

#include <cliptrain/image.h>

#include <limits.h>
#include <math.h>
#include <string.h>

#include "data/image-private.h"

#define PRECISION_BITS (32 - 8 - 2)

static double
bicubic(double x)
{
  const double a = -0.5;
  if (x < 0.0)
    x = -x;
  if (x < 1.0)
    return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0)
    return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

/* Fixed-point weights of outputs FIRST .. FIRST + N - 1 of a resize of
 * IN_SIZE samples to OUT_SIZE. */
typedef struct {
  int ksize;
  int *start;  /* [n] first input sample */
  int *count;  /* [n] input samples used */
  int32_t *k;  /* [n][ksize] */
} Coeffs;

static void
coeffs_init(Coeffs *c, int in_size, int out_size, int first, int n)
{
  double scale = (double)in_size / out_size;
  double filterscale = scale < 1.0 ? 1.0 : scale;
  double support = 2.0 * filterscale;
  int ksize = (int)ceil(support) * 2 + 1;
  double ss = 1.0 / filterscale;
  double *w = g_new(double, ksize);

  c->ksize = ksize;
  c->start = g_new(int, n);
  c->count = g_new(int, n);
  c->k = g_new0(int32_t, (size_t)n * ksize);
  for (int i = 0; i < n; i++) {
    int xx = first + i;
    double center = (xx + 0.5) * scale;
    int xmin = (int)(center - support + 0.5);
    if (xmin < 0)
      xmin = 0;
    int xmax = (int)(center + support + 0.5);
    if (xmax > in_size)
      xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; x++) {
      w[x] = bicubic((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    int32_t *k = c->k + (size_t)i * ksize;
    for (int x = 0; x < xmax; x++) {
      double v = ww != 0.0 ? w[x] / ww : w[x];
      k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS))
                   : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
    }
    c->start[i] = xmin;
    c->count[i] = xmax;
  }
  g_free(w);
}

static void
coeffs_clear(Coeffs *c)
{
  g_free(c->start);
  g_free(c->count);
  g_free(c->k);
}

static inline uint8_t
clip8(int32_t ss)
{
  if (ss < 0)
    return 0;
  ss >>= PRECISION_BITS;
  return ss > 255 ? 255 : (uint8_t)ss;
}

/* The vertical pass for 16 samples at once: a fixed trip count lets the
 * compiler vectorise it at -O2. */
#define VBLOCK 16

/* Resize the IN_W x IN_H image of NCH interleaved channels at SRC (rows
 * STRIDE bytes apart) to OUT_W x OUT_H as Pillow does, writing only the
 * window of OW x OH pixels at (OX, OY) to DST (packed rows). */
static void
resample(const uint8_t *src, size_t stride, int nch, int in_w, int in_h, int out_w, int out_h,
         int ox, int oy, int ow, int oh, uint8_t *dst)
{
  gboolean need_h = out_w != in_w, need_v = out_h != in_h;
  Coeffs cv = { 0 }, ch = { 0 };
  int y_first = oy, y_last = oy + oh; /* input rows the vertical pass reads */
  if (need_v) {
    coeffs_init(&cv, in_h, out_h, oy, oh);
    y_first = cv.start[0];
    y_last = cv.start[oh - 1] + cv.count[oh - 1];
  }

  /* horizontal pass: rows y_first .. y_last - 1 into TMP (OW wide) */
  int tmp_h = y_last - y_first;
  size_t row = (size_t)ow * nch;
  uint8_t *tmp = g_malloc(row * tmp_h);
  if (need_h) {
    coeffs_init(&ch, in_w, out_w, ox, ow);
    int ksize = ch.ksize;
    for (int y = 0; y < tmp_h; y++) {
      const uint8_t *in = src + (size_t)(y + y_first) * stride;
      uint8_t *out = tmp + (size_t)y * row;
      for (int xx = 0; xx < ow; xx++) {
        const int32_t *k = ch.k + (size_t)xx * ksize;
        const uint8_t *p = in + (size_t)ch.start[xx] * nch;
        int n = ch.count[xx];
        if (nch == 3) {
          int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
          for (int x = 0; x < n; x++, p += 3) {
            s0 += p[0] * k[x];
            s1 += p[1] * k[x];
            s2 += p[2] * k[x];
          }
          out[xx * 3 + 0] = clip8(s0);
          out[xx * 3 + 1] = clip8(s1);
          out[xx * 3 + 2] = clip8(s2);
        } else {
          int32_t s0 = 1 << (PRECISION_BITS - 1);
          for (int x = 0; x < n; x++)
            s0 += p[x] * k[x];
          out[xx] = clip8(s0);
        }
      }
    }
    coeffs_clear(&ch);
  } else {
    for (int y = 0; y < tmp_h; y++)
      memcpy(tmp + (size_t)y * row, src + (size_t)(y + y_first) * stride + (size_t)ox * nch,
             row);
  }

  /* vertical pass */
  if (need_v) {
    int ksize = cv.ksize;
    for (int yy = 0; yy < oh; yy++) {
      const int32_t *k = cv.k + (size_t)yy * ksize;
      const uint8_t *in = tmp + (size_t)(cv.start[yy] - y_first) * row;
      int n = cv.count[yy];
      uint8_t *out = dst + (size_t)yy * row;
      size_t i = 0;
      for (; i + VBLOCK <= row; i += VBLOCK) {
        int32_t acc[VBLOCK];
        for (int j = 0; j < VBLOCK; j++)
          acc[j] = 1 << (PRECISION_BITS - 1);
        const uint8_t *p = in + i;
        for (int y = 0; y < n; y++, p += row) {
          int32_t ky = k[y];
          for (int j = 0; j < VBLOCK; j++)
            acc[j] += p[j] * ky;
        }
        for (int j = 0; j < VBLOCK; j++)
          out[i + j] = clip8(acc[j]);
      }
      for (; i < row; i++) {
        int32_t acc = 1 << (PRECISION_BITS - 1);
        const uint8_t *p = in + i;
        for (int y = 0; y < n; y++, p += row)
          acc += *p * k[y];
        out[i] = clip8(acc);
      }
    }
    coeffs_clear(&cv);
  } else {
    memcpy(dst, tmp, row * oh);
  }
  g_free(tmp);
}

/* Resample the crop (TOP, LEFT, HEIGHT, WIDTH) of IMAGE as above into the
 * RGB image DST (OW x OH).  A grey crop (R = G = B everywhere, as every
 * decoded grey image is) is resampled once and copied to the three
 * channels: the same bytes, a third of the work. */
static void
resample_rgb(const CtImage *image, int top, int left, int height, int width, int out_w,
             int out_h, int ox, int oy, int ow, int oh, CtImage *dst)
{
  size_t stride = (size_t)image->width * 3;
  const uint8_t *src = image->pixels + (size_t)top * stride + (size_t)left * 3;
  gboolean grey = TRUE;
  for (int y = 0; y < height && grey; y++) {
    const uint8_t *p = src + (size_t)y * stride;
    for (int x = 0; x < width; x++, p += 3)
      if (p[0] != p[1] || p[0] != p[2]) {
        grey = FALSE;
        break;
      }
  }
  if (!grey) {
    resample(src, stride, 3, width, height, out_w, out_h, ox, oy, ow, oh, dst->pixels);
    return;
  }
  uint8_t *g = g_malloc((size_t)width * height + (size_t)ow * oh);
  uint8_t *gout = g + (size_t)width * height;
  for (int y = 0; y < height; y++) {
    const uint8_t *p = src + (size_t)y * stride;
    for (int x = 0; x < width; x++)
      g[(size_t)y * width + x] = p[3 * x];
  }
  resample(g, (size_t)width, 1, width, height, out_w, out_h, ox, oy, ow, oh, gout);
  size_t n = (size_t)ow * oh;
  for (size_t i = 0; i < n; i++)
    dst->pixels[3 * i] = dst->pixels[3 * i + 1] = dst->pixels[3 * i + 2] = gout[i];
  g_free(g);
}

/* PIL's image.crop((left, top, left + width, top + height))
 * .resize((out_width, out_height), Image.BICUBIC); the box must lie inside
 * the image.  (transfer full) */
CtImage *
ct_image_resized_crop_u8(const CtImage *image, int top, int left, int height, int width,
                         int out_width, int out_height)
{
  g_return_val_if_fail(image != NULL, NULL);
  g_return_val_if_fail(top >= 0 && left >= 0 && height > 0 && width > 0, NULL);
  g_return_val_if_fail(top + height <= image->height && left + width <= image->width, NULL);
  g_return_val_if_fail(out_width > 0 && out_height > 0, NULL);
  CtImage *out = ct_image_new(out_width, out_height);
  resample_rgb(image, top, left, height, width, out_width, out_height, 0, 0, out_width,
               out_height, out);
  return out;
}

/* Python's int(round(x / 2.0)) for an integer x >= 0: ties go to even. */
static int
half_round_even(int x)
{
  int q = x / 2;
  if (x % 2 && q % 2)
    q++;
  return q;
}

/* torchvision's Resize(size, BICUBIC) then CenterCrop(size), as uint8.
 * (transfer full) */
CtImage *
ct_image_resize_center_crop_u8(const CtImage *image, int size)
{
  g_return_val_if_fail(image != NULL && size > 0, NULL);
  int w = image->width, h = image->height;
  g_return_val_if_fail((double)size * MAX(w, h) / MIN(w, h) < INT_MAX / 4, NULL);
  int new_w, new_h;
  if (w <= h) {
    new_w = size;
    new_h = (int)((double)size * h / w);
  } else {
    new_h = size;
    new_w = (int)((double)size * w / h);
  }
  int top = half_round_even(new_h - size), left = half_round_even(new_w - size);
  CtImage *out = ct_image_new(size, size);
  resample_rgb(image, 0, 0, h, w, new_w, new_h, left, top, size, size, out);
  return out;
}

/* torchvision's RandomResizedCrop.get_params(img, scale=(min_scale, 1),
 * ratio=(ratio_lo, ratio_hi)) with the draws from RNG: ten tries of a
 * random area and log-uniform aspect ratio, rounded half to even, kept if
 * it fits, at a uniform position; otherwise the largest central crop with
 * the ratio clamped into range. */
void
ct_image_random_resized_crop_box(const CtImage *image, double min_scale, double ratio_lo,
                                 double ratio_hi, CtRng *rng, int *top, int *left, int *height,
                                 int *width)
{
  int W = image->width, H = image->height;
  double area = (double)H * W;
  double log_lo = log(ratio_lo), log_hi = log(ratio_hi);
  for (int attempt = 0; attempt < 10; attempt++) {
    double target_area = area * (min_scale + (1.0 - min_scale) * ct_rng_uniform(rng));
    double aspect = exp(log_lo + (log_hi - log_lo) * ct_rng_uniform(rng));
    int w = (int)rint(sqrt(target_area * aspect));
    int h = (int)rint(sqrt(target_area / aspect));
    if (0 < w && w <= W && 0 < h && h <= H) {
      *top = (int)ct_rng_below(rng, (uint64_t)(H - h + 1));
      *left = (int)ct_rng_below(rng, (uint64_t)(W - w + 1));
      *height = h;
      *width = w;
      return;
    }
  }
  double in_ratio = (double)W / H;
  double rmin = fmin(ratio_lo, ratio_hi), rmax = fmax(ratio_lo, ratio_hi);
  int w = W, h = H;
  if (in_ratio < rmin)
    h = (int)rint(w / rmin);
  else if (in_ratio > rmax)
    w = (int)rint(h * rmax);
  /* torchvision would crop nothing here; a 1-pixel side is the nearest */
  h = CLAMP(h, 1, H);
  w = CLAMP(w, 1, W);
  *top = (H - h) / 2;
  *left = (W - w) / 2;
  *height = h;
  *width = w;
}

/* ToTensor then Normalize(mean, std) into OUT (3, height, width),
 * mirrored left-right when HFLIP. */
void
ct_image_normalize(const CtImage *image, gboolean hflip, const float mean[3], const float std[3],
                   float *out)
{
  float lut[3][256];
  for (int c = 0; c < 3; c++)
    for (int v = 0; v < 256; v++)
      lut[c][v] = ((float)v / 255.0f - mean[c]) / std[c];
  int w = image->width, h = image->height;
  size_t plane = (size_t)w * h;
  for (int y = 0; y < h; y++) {
    const uint8_t *p = image->pixels + (size_t)y * w * 3;
    float *o0 = out + (size_t)y * w, *o1 = o0 + plane, *o2 = o1 + plane;
    for (int x = 0; x < w; x++, p += 3) {
      int xo = hflip ? w - 1 - x : x;
      o0[xo] = lut[0][p[0]];
      o1[xo] = lut[1][p[1]];
      o2[xo] = lut[2][p[2]];
    }
  }
}

void
ct_image_resize_center_crop(const CtImage *image, int size, const float mean[3],
                            const float std[3], float *out)
{
  g_return_if_fail(image != NULL && size > 0 && mean != NULL && std != NULL && out != NULL);
  CtImage *crop = ct_image_resize_center_crop_u8(image, size);
  if (!crop)
    return; /* absurd aspect ratio, already reported */
  ct_image_normalize(crop, FALSE, mean, std, out);
  ct_image_free(crop);
}

void
ct_image_random_resized_crop(const CtImage *image, int size, double min_scale, double ratio_lo,
                             double ratio_hi, gboolean hflip, CtRng *rng, const float mean[3],
                             const float std[3], float *out)
{
  g_return_if_fail(image != NULL && size > 0 && rng != NULL && out != NULL);
  g_return_if_fail(mean != NULL && std != NULL);
  g_return_if_fail(min_scale > 0.0 && min_scale <= 1.0);
  g_return_if_fail(ratio_lo > 0.0 && ratio_hi > 0.0);
  int top, left, height, width;
  ct_image_random_resized_crop_box(image, min_scale, ratio_lo, ratio_hi, rng, &top, &left,
                                   &height, &width);
  CtImage *crop = ct_image_resized_crop_u8(image, top, left, height, width, size, size);
  gboolean flip = hflip && ct_rng_uniform(rng) < 0.5;
  ct_image_normalize(crop, flip, mean, std, out);
  ct_image_free(crop);
}
