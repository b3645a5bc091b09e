-- ACCOUNT_CREDIT=unlimited (a self-hosted server costs nothing): the budget is not checked,
-- though spending is still counted. The sandbox keeps a ledger of its own (account id 2), so a
-- trial in sandbox mode never shows as spent on the real account.
ALTER TABLE account ADD COLUMN unlimited INTEGER NOT NULL DEFAULT 0;
