/* image.c: CtImage and decoding PNG (libpng) and JPEG (libjpeg-turbo) from
 * memory into 8-bit RGB, pixel for pixel as PIL's Image.open(...)
 * .convert("RGB") does.
 *
 * Both decoders report errors by longjmp: libpng through png_jmpbuf(),
 * libjpeg through our error manager.  Everything allocated after setjmp()
 * lives in volatile locals and is freed on the error path, and neither
 * library is ever allowed to print or to exit().
 *
 * PNG: any bit depth and colour type, interlaced or not.  Palette and
 * 1/2/4-bit grey expand to 8 bits, 16-bit samples keep their high byte,
 * grey becomes RGB and alpha (or tRNS) is dropped without compositing.
 * Data is read through a bounds-checked callback: running past the end is
 * "NAME: truncated PNG data"; anything libpng rejects (CRC, zlib, IHDR) is
 * "NAME: corrupt PNG: <libpng's message>".
 *
 * JPEG: grey, YCbCr and RGB decode to RGB inside libjpeg; CMYK and YCCK
 * (Adobe's inverted convention, as PIL assumes) convert with PIL's
 * cmyk2rgb.  jpeg_mem_src() pads a short stream with a fake EOI and warns;
 * we turn that warning into "NAME: truncated JPEG data" instead of
 * returning a half-grey image.  Other warnings (corrupt data that libjpeg
 * recovers from) are ignored, as PIL ignores them. */
#include "config.h"

#include <cliptrain/image.h>

#include "base/file.h"

#include <errno.h>
#include <fcntl.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h> /* jpeglib.h needs FILE */
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jerror.h>
#include <jpeglib.h>

/* PIL's decompression-bomb limit (2 * Image.MAX_IMAGE_PIXELS): larger
 * images are refused before any pixel memory is allocated.  The fuzz
 * targets build with a lower one: a 521-byte JPEG can legitimately decode
 * to 138M pixels, seconds of work, slower still under the sanitizers. */
#ifndef CT_IMAGE_MAX_PIXELS
#define CT_IMAGE_MAX_PIXELS 178956970u
#endif
/* The largest image file read (1 GiB): far more than a real image within
 * the pixel limit takes. */
#define CT_IMAGE_MAX_FILE_BYTES ((guint64)1 << 30)
/* A progressive JPEG may hold any number of scans; a hostile one uses
 * thousands to burn CPU.  libjpeg-turbo suggests a limit like this. */
#define CT_JPEG_MAX_SCANS 500

CtImage *
ct_image_new(int width, int height)
{
  g_return_val_if_fail(width > 0 && height > 0, NULL);
  CtImage *image = g_new(CtImage, 1);
  image->width = width;
  image->height = height;
  image->pixels = g_malloc((size_t)width * (size_t)height * 3);
  return image;
}

void
ct_image_free(CtImage *image)
{
  if (!image)
    return;
  g_free(image->pixels);
  g_free(image);
}

CtImage *
ct_image_new_from_gray(const uint8_t *gray, int width, int height)
{
  g_return_val_if_fail(gray != NULL, NULL);
  CtImage *image = ct_image_new(width, height);
  if (!image)
    return NULL;
  size_t n = (size_t)width * (size_t)height;
  uint8_t *p = image->pixels;
  for (size_t i = 0; i < n; i++, p += 3)
    p[0] = p[1] = p[2] = gray[i];
  return image;
}

static gboolean
size_ok(const char *name, const char *what, unsigned long width, unsigned long height,
        GError **error)
{
  if (width == 0 || height == 0 || width > INT_MAX / 3 || height > INT_MAX / 3 ||
      (guint64)width * height > CT_IMAGE_MAX_PIXELS) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                "%s: %s image of %lu x %lu pixels is too large (limit %u pixels)", name, what,
                width, height, CT_IMAGE_MAX_PIXELS);
    return FALSE;
  }
  return TRUE;
}

/* ---------------------------------------------------------------- PNG */

static const uint8_t png_signature[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };

typedef struct {
  const uint8_t *data;
  size_t len, pos;
  gboolean truncated;
  char message[256];
} PngSource;

static void
png_read_cb(png_structp png, png_bytep out, size_t n)
{
  PngSource *src = png_get_io_ptr(png);
  if (n > src->len - src->pos) {
    src->truncated = TRUE;
    png_error(png, "truncated");
  }
  memcpy(out, src->data + src->pos, n);
  src->pos += n;
}

static void
png_error_cb(png_structp png, png_const_charp msg)
{
  PngSource *src = png_get_error_ptr(png);
  g_strlcpy(src->message, msg ? msg : "unknown error", sizeof src->message);
  png_longjmp(png, 1);
}

static void
png_warning_cb(png_structp png, png_const_charp msg)
{
  /* libpng warns about ancillary chunks it skips (bad CRC, bad iCCP...);
   * PIL decodes such files too.  Stay silent. */
}

/* SRC lives in the caller: nothing the callbacks change is a local of the
 * function that calls setjmp(). */
static CtImage *
decode_png_from(PngSource *src, const char *name, GError **error)
{
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, src, png_error_cb,
                                           png_warning_cb);
  if (!png) {
    g_set_error(error, CT_ERROR, CT_ERROR_FAILED, "%s: cannot create a PNG reader", name);
    return NULL;
  }
  png_infop info = png_create_info_struct(png);
  if (!info) {
    png_destroy_read_struct(&png, NULL, NULL);
    g_set_error(error, CT_ERROR, CT_ERROR_FAILED, "%s: cannot create a PNG reader", name);
    return NULL;
  }

  CtImage *volatile image = NULL;
  png_bytep *volatile rows = NULL;
  volatile gboolean too_large = FALSE;

  if (setjmp(png_jmpbuf(png))) {
    ct_image_free(image);
    g_free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    if (too_large)
      return NULL; /* error already set */
    if (src->truncated)
      g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: truncated PNG data", name);
    else
      g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: corrupt PNG: %s", name, src->message);
    return NULL;
  }

  png_set_read_fn(png, src, png_read_cb);
  png_read_info(png, info);

  png_uint_32 width, height;
  int bit_depth, color_type, interlace;
  png_get_IHDR(png, info, &width, &height, &bit_depth, &color_type, &interlace, NULL, NULL);
  if (!size_ok(name, "PNG", width, height, error)) {
    too_large = TRUE;
    png_longjmp(png, 1);
  }

  png_set_expand(png); /* palette -> RGB, 1/2/4-bit grey -> 8, tRNS -> alpha */
  png_set_strip_16(png);
  png_set_strip_alpha(png);
  if (!(color_type & PNG_COLOR_MASK_COLOR))
    png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);

  if (png_get_channels(png, info) != 3 || png_get_bit_depth(png, info) != 8 ||
      png_get_rowbytes(png, info) != (size_t)width * 3)
    png_error(png, "unexpected pixel layout after transforms");

  image = ct_image_new((int)width, (int)height);
  rows = g_new(png_bytep, height);
  for (png_uint_32 y = 0; y < height; y++)
    rows[y] = image->pixels + (size_t)y * width * 3;
  png_read_image(png, rows);
  png_read_end(png, NULL);

  CtImage *result = image;
  g_free(rows);
  png_destroy_read_struct(&png, &info, NULL);
  return result;
}

static CtImage *
decode_png(const uint8_t *data, size_t len, const char *name, GError **error)
{
  PngSource src = { .data = data, .len = len, .pos = 0, .truncated = FALSE };
  return decode_png_from(&src, name, error);
}

/* ---------------------------------------------------------------- JPEG */

typedef struct {
  struct jpeg_error_mgr pub;
  struct jpeg_progress_mgr progress;
  jmp_buf jmp;
  gboolean truncated;
  gboolean too_many_scans;
  char message[JMSG_LENGTH_MAX];
} JpegErr;

static void
jpeg_error_exit_cb(j_common_ptr cinfo)
{
  JpegErr *err = (JpegErr *)cinfo->err;
  err->pub.format_message(cinfo, err->message);
  longjmp(err->jmp, 1);
}

static void
jpeg_emit_message_cb(j_common_ptr cinfo, int level)
{
  JpegErr *err = (JpegErr *)cinfo->err;
  if (level >= 0)
    return; /* trace messages */
  err->pub.num_warnings++;
  if (err->pub.msg_code == JWRN_JPEG_EOF) {
    /* The source ran dry and libjpeg inserted a fake EOI. */
    err->truncated = TRUE;
    longjmp(err->jmp, 1);
  }
}

static void
jpeg_output_message_cb(j_common_ptr cinfo)
{
}

static void
jpeg_progress_cb(j_common_ptr cinfo)
{
  JpegErr *err = (JpegErr *)cinfo->err;
  if (cinfo->is_decompressor &&
      ((j_decompress_ptr)cinfo)->input_scan_number > CT_JPEG_MAX_SCANS) {
    err->too_many_scans = TRUE;
    longjmp(err->jmp, 1);
  }
}

/* PIL's cmyk2rgb, after undoing Adobe's inversion ("CMYK;I"). */
static void
cmyk_row_to_rgb(uint8_t *out, const uint8_t *in, int width)
{
  for (int x = 0; x < width; x++, in += 4, out += 3) {
    int nk = in[3]; /* 255 - (255 - in[3]) */
    for (int c = 0; c < 3; c++) {
      int v = 255 - in[c];
      int t = v * nk + 128;
      int m = ((t >> 8) + t) >> 8; /* v * nk / 255, rounded */
      int r = nk - m;
      out[c] = (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
    }
  }
}

/* CI and JE live in the caller, for the same reason as the PNG
 * source. */
static CtImage *
decode_jpeg_with(struct jpeg_decompress_struct *ci, JpegErr *je, const uint8_t *data, size_t len,
                 const char *name, GError **error)
{
  CtImage *volatile image = NULL;
  uint8_t *volatile row = NULL;
  volatile gboolean too_large = FALSE;

  if (setjmp(je->jmp)) {
    ct_image_free(image);
    g_free(row);
    jpeg_destroy_decompress(ci);
    if (too_large)
      return NULL; /* error already set */
    if (je->truncated)
      g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: truncated JPEG data", name);
    else if (je->too_many_scans)
      g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: corrupt JPEG: more than %d scans",
                  name, CT_JPEG_MAX_SCANS);
    else
      g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: corrupt JPEG: %s", name, je->message);
    return NULL;
  }

  jpeg_create_decompress(ci);
  je->progress.progress_monitor = jpeg_progress_cb;
  ci->progress = &je->progress;
  jpeg_mem_src(ci, data, (unsigned long)len);
  jpeg_read_header(ci, TRUE);
  if (!size_ok(name, "JPEG", ci->image_width, ci->image_height, error)) {
    too_large = TRUE;
    longjmp(je->jmp, 1);
  }

  gboolean cmyk = FALSE;
  switch (ci->jpeg_color_space) {
  case JCS_GRAYSCALE:
  case JCS_YCbCr:
  case JCS_RGB:
    ci->out_color_space = JCS_RGB;
    break;
  case JCS_CMYK:
  case JCS_YCCK:
    ci->out_color_space = JCS_CMYK;
    cmyk = TRUE;
    break;
  default:
    g_snprintf(je->message, sizeof je->message, "unsupported colour space with %d components",
               ci->num_components);
    longjmp(je->jmp, 1);
  }

  jpeg_start_decompress(ci);
  if (ci->output_components != (cmyk ? 4 : 3)) {
    g_snprintf(je->message, sizeof je->message, "unexpected %d output components",
               ci->output_components);
    longjmp(je->jmp, 1);
  }
  int width = (int)ci->output_width;
  image = ct_image_new(width, (int)ci->output_height);
  if (cmyk)
    row = g_malloc((size_t)width * 4);
  while (ci->output_scanline < ci->output_height) {
    uint8_t *dst = image->pixels + (size_t)ci->output_scanline * width * 3;
    JSAMPROW rowp = cmyk ? row : dst;
    if (jpeg_read_scanlines(ci, &rowp, 1) != 1) {
      g_strlcpy(je->message, "no scanline decoded", sizeof je->message);
      longjmp(je->jmp, 1);
    }
    if (cmyk)
      cmyk_row_to_rgb(dst, row, width);
  }
  /* Reads up to EOI: a stream cut after the last scan is truncated too
   * (PIL refuses it as well). */
  jpeg_finish_decompress(ci);

  CtImage *result = image;
  g_free(row);
  jpeg_destroy_decompress(ci);
  return result;
}

static CtImage *
decode_jpeg(const uint8_t *data, size_t len, const char *name, GError **error)
{
  struct jpeg_decompress_struct cinfo;
  JpegErr err;
  memset(&cinfo, 0, sizeof cinfo);
  memset(&err, 0, sizeof err);
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = jpeg_error_exit_cb;
  err.pub.emit_message = jpeg_emit_message_cb;
  err.pub.output_message = jpeg_output_message_cb;
  return decode_jpeg_with(&cinfo, &err, data, len, name, error);
}

/* ---------------------------------------------------------------- entry points */

CtImage *
ct_image_decode(const void *data, size_t len, const char *name, GError **error)
{
  g_return_val_if_fail(data != NULL || len == 0, NULL);
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);
  const uint8_t *p = data;
  if (!name)
    name = "(memory)";
  if (len >= sizeof png_signature && memcmp(p, png_signature, sizeof png_signature) == 0)
    return decode_png(p, len, name, error);
  if (len >= 4 && memcmp(p, png_signature, len < 8 ? len : 8) == 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: truncated PNG data", name);
    return NULL;
  }
  if (len >= 2 && p[0] == 0xff && p[1] == 0xd8)
    return decode_jpeg(p, len, name, error);
  g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: not a PNG or JPEG image%s", name,
              len == 0 ? " (empty)" : "");
  return NULL;
}

CtImage *
ct_image_load(const char *path, GError **error)
{
  g_return_val_if_fail(path != NULL, NULL);
  g_return_val_if_fail(error == NULL || *error == NULL, NULL);
  /* A FIFO, a device such as /dev/zero or /dev/stdin, or a folder is
   * refused at once (g_file_get_contents would block on the first and
   * read the second until memory runs out), and so is a file over
   * CT_IMAGE_MAX_FILE_BYTES. */
  size_t len = 0;
  char *data = NULL;
  if (!ct_file_read_all(path, "an image file", CT_IMAGE_MAX_FILE_BYTES, &data, &len, error))
    return NULL;
  CtImage *image = ct_image_decode((const guint8 *)data, len, path, error);
  g_free(data);
  return image;
}
