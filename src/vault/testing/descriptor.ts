/** Test helper: the descriptor a shipper writes for a database, with fixed placeholder fields. */
export const descriptor = (dbId: string) => () => ({
  format: 1 as const,
  dbId,
  name: 't',
  server: 's',
  region: 'r',
  pool: 'p',
  pageSize: 4096,
  createdAt: 0,
  retentionDays: 7,
  ltr: null,
});
