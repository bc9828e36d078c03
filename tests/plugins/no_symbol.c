/* A shared object without the entry symbol: refused. */
int ct_test_not_a_plugin(void);
int
ct_test_not_a_plugin(void)
{
  return 42;
}
