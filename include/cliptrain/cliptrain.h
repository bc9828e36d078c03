/* cliptrain.h: the whole public API in one include. */
#ifndef CLIPTRAIN_H
#define CLIPTRAIN_H

#include <cliptrain/ct-common.h>
#include <cliptrain/safetensors.h>
#include <cliptrain/model.h>
#include <cliptrain/loss.h>
#include <cliptrain/optimizer.h>
#include <cliptrain/schedule.h>
#include <cliptrain/rng.h>
#include <cliptrain/learner.h>
#include <cliptrain/plugin.h>
#include <cliptrain/tokenizer.h>
#include <cliptrain/image.h>
#include <cliptrain/profile.h>

#endif
