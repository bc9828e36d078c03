/* dataset-source.c: source samples turned into model inputs: captions
 * from labels and templates, tokenized; images decoded and transformed. */
#include "config.h"

#include "data/dataset.h"

#include <cliptrain/image.h>
#include <cliptrain/rng.h>
#include <cliptrain/tokenizer.h>

#include <string.h>

static gboolean
source_get(CtDataset *ds, size_t index, int epoch, float *image, int32_t *tokens,
           GError **error)
{
  const CtDatasetOptions *o = &ds->o;
  CtRng rng; /* every draw of (sample, epoch) */
  ct_rng_init_stream(&rng, ds->seed, ((uint64_t) (epoch + 1) << 40) ^ index);
  CtImage *img = NULL;
  char *caption = NULL;
  int label = -1;
  size_t i = index, n_src = ct_source_len(ds->src);
  GError *e = NULL;
  for (size_t tries = 0;; tries++) {
    if (ct_source_get(ds->src, i, &img, &caption, &label, &e))
      break;
    if (!o->skip_corrupt || e->domain != CT_ERROR || e->code != CT_ERROR_FORMAT ||
        tries + 1 >= n_src) {
      g_propagate_error(error, e);
      return FALSE;
    }
    g_clear_error(&e);
    ct_dataset_note_skipped(ds, i);
    i = (i + 1) % n_src; /* the next sample stands in */
  }
  if (!caption) {
    char **names = o->class_captions ? o->class_captions : ds->src->class_names;
    const char *name = names && label >= 0 && label < (int) g_strv_length(names)
                         ? names[label] : "?";
    guint nt = o->templates ? g_strv_length(o->templates) : 0;
    const char *tmpl = nt ? o->templates[o->random_template ? ct_rng_below(&rng, nt) : 0] : "{label}";
    caption = ct_template_fill(tmpl, name);
  }
  GError *terr = NULL;
  gboolean ok = ct_tokenizer_tokenize(ds->tok, caption, o->context_length, o->truncate, tokens,
                                      &terr);
  if (!ok) {
    /* the tokenizer names the caption; the source says where it is */
    g_autofree char *where = ct_source_where(ds->src, i);
    g_autofree char *shown = where ? ct_source_one_line(where) : NULL;
    if (shown)
      g_prefix_error(&terr, "%s: ", shown);
    g_propagate_error(error, terr);
  } else {
    if (o->augment)
      ct_image_random_resized_crop(img, o->size, o->min_scale, o->ratio_lo, o->ratio_hi,
                                   o->hflip, &rng, o->mean, o->std, image);
    else
      ct_image_resize_center_crop(img, o->size, o->mean, o->std, image);
  }
  ct_image_free(img);
  g_free(caption);
  return ok;
}

CtDataset *
ct_dataset_new_source(CtSource *src, CtTokenizer *tok, const CtDatasetOptions *options)
{
  CtDataset *ds = g_new0(CtDataset, 1);
  g_mutex_init(&ds->skipped_lock);
  ds->src = src;
  ds->tok = tok;
  ds->o = *options;
  ds->o.templates = g_strdupv(options->templates);
  ds->o.class_captions = g_strdupv(options->class_captions);
  ds->seed = options->seed;
  ds->n = ct_source_len(src);
  ds->get = source_get;
  return ds;
}

