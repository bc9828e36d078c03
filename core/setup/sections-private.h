/* sections-private.h: what sections.c (reading) and sections-keys.c
 * (describing) share: the schema tables and the defaults that depend on
 * another key.  Not installed. */
#ifndef CT_SECTIONS_PRIVATE_H
#define CT_SECTIONS_PRIVATE_H

#include "setup/sections.h"

/* The keys of the top level that are not sections (described only: seed
 * has its own check, the plugin lists theirs). */
extern const CtParamSpec ct_top_level_keys[];

/* One core section: its name, a line saying what it holds, its schema. */
typedef struct {
  const char *name;
  const char *doc;
  const CtSectionKey *keys;
} CtSectionInfo;

/* data, model, optimizer, schedule, fit, output; ends with name NULL.
 * Keys whose default is NULL here take it from the functions below. */
extern const CtSectionInfo ct_section_infos[];

/* The defaults that another key chooses, as ct_section_read takes them
 * (NULL-terminated key, value pairs; transfer full: g_strfreev): those
 * of optimizer kind KIND, of model preset PRESET (NULL for an unknown
 * one), of schedule NAME (its own parameters; NULL for an unknown one). */
char **ct_sections_optimizer_defaults(const char *kind);
char **ct_sections_model_defaults(const char *preset);
char **ct_sections_schedule_defaults(const char *name);

#endif
