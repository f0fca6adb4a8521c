//! `tally ledger verify`: the ledger's invariants, checked on the live database.

use std::fmt::Write;

use deadpool_postgres::Pool;

use crate::store::StoreError;

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub facts: i64,
    pub journals: i64,
    pub entries: i64,
    /// I3: journals whose entries do not sum to zero in some currency.
    pub unbalanced_journals: Vec<String>,
    /// Balances that differ from Σ entries.
    pub balance_mismatches: Vec<String>,
    /// Facts of a money-moving kind without a journal, or journals without their fact.
    pub missing_journals: i64,
    /// Journals that do not move their fact's money (issue 13, item 1): the debits must sum to the fact's amount, in
    /// its currency, a fee leg must equal its fee, and the scoped accounts must be the fact's merchant and PSP. This
    /// ties what was booked to the fact itself, not only to the journal it was written from.
    pub amount_mismatches: Vec<String>,
    /// Per partition: consumed offsets not accounted for (booked, duplicate or rejected), or accounted twice.
    pub offset_problems: Vec<String>,
    pub open_orphans: i64,
    pub content_conflicts: i64,
    /// Correction journals booked (maker-checker, migration 0015).
    pub corrections: i64,
    /// Corrections whose entries no longer hash to the approved journal, with other than one journal, or entries
    /// whose fact or correction is not their journal's.
    pub correction_problems: Vec<String>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.unbalanced_journals.is_empty()
            && self.balance_mismatches.is_empty()
            && self.missing_journals == 0
            && self.amount_mismatches.is_empty()
            && self.offset_problems.is_empty()
            && self.correction_problems.is_empty()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mark = |ok: bool| if ok { "ok  " } else { "FAIL" };
        let _ = writeln!(out, "facts {}  journals {}  entries {}", self.facts, self.journals, self.entries);
        let _ = writeln!(
            out,
            "{} every journal balances per currency ({} unbalanced)",
            mark(self.unbalanced_journals.is_empty()),
            self.unbalanced_journals.len()
        );
        let _ = writeln!(
            out,
            "{} balances = Σ entries ({} mismatched)",
            mark(self.balance_mismatches.is_empty()),
            self.balance_mismatches.len()
        );
        let _ = writeln!(
            out,
            "{} every money-moving fact has its journal ({} missing)",
            mark(self.missing_journals == 0),
            self.missing_journals
        );
        let _ = writeln!(
            out,
            "{} every journal moves its fact's amount, fee, currency, merchant and PSP ({} differ)",
            mark(self.amount_mismatches.is_empty()),
            self.amount_mismatches.len()
        );
        let _ = writeln!(
            out,
            "{} consumed offsets all accounted for, no gaps ({} problems)",
            mark(self.offset_problems.is_empty()),
            self.offset_problems.len()
        );
        let _ = writeln!(
            out,
            "{} every correction journal is the one its two operators approved ({} corrections, {} problems)",
            mark(self.correction_problems.is_empty()),
            self.corrections,
            self.correction_problems.len()
        );
        let _ = writeln!(
            out,
            "info data-quality exceptions: {} open orphans, {} content conflicts",
            self.open_orphans, self.content_conflicts
        );
        for line in self
            .unbalanced_journals
            .iter()
            .chain(&self.balance_mismatches)
            .chain(&self.amount_mismatches)
            .chain(&self.offset_problems)
            .chain(&self.correction_problems)
            .take(20)
        {
            let _ = writeln!(out, "  {line}");
        }
        out
    }
}

pub async fn verify(pool: &Pool, group: &str) -> Result<VerifyReport, StoreError> {
    let client = pool.get().await?;
    let mut r = VerifyReport::default();
    let count = |sql: &'static str| async { client.query_one(sql, &[]).await.map(|row| row.get::<_, i64>(0)) };
    r.facts = count("SELECT count(*) FROM event_log").await?;
    r.journals = count("SELECT count(*) FROM journals").await?;
    r.entries = count("SELECT count(*) FROM entries").await?;
    r.unbalanced_journals = client
        .query(
            "SELECT journal_id, currency, sum(amount_minor)::bigint FROM entries GROUP BY 1, 2 HAVING sum(amount_minor) <> 0 LIMIT 100",
            &[],
        )
        .await?
        .iter()
        .map(|row| format!("journal {} sums to {} in {}", row.get::<_, i64>(0), row.get::<_, i64>(2), row.get::<_, String>(1)))
        .collect();
    r.balance_mismatches = client
        .query(
            "SELECT coalesce(e.account, b.account), coalesce(e.currency, b.currency), coalesce(e.total, 0)::bigint,
                    coalesce(b.balance_minor, 0)
             FROM (SELECT account, currency, sum(amount_minor) AS total FROM entries GROUP BY 1, 2) e
             FULL JOIN account_balances b ON b.account = e.account AND b.currency = e.currency
             WHERE coalesce(e.total, 0) <> coalesce(b.balance_minor, 0) LIMIT 100",
            &[],
        )
        .await?
        .iter()
        .map(|row| {
            format!(
                "{} {}: entries sum {} but balance says {}",
                row.get::<_, String>(0),
                row.get::<_, String>(1),
                row.get::<_, i64>(2),
                row.get::<_, i64>(3)
            )
        })
        .collect();
    // The kinds that post a journal, from the posting rules themselves.
    let posting_kinds: Vec<&str> = tally_domain::EventKind::ALL
        .into_iter()
        .filter(|k| tally_domain::ledger::moves_money(*k))
        .map(|k| k.as_str())
        .collect();
    r.missing_journals = client
        .query_one(
            "SELECT count(*) FROM event_log e LEFT JOIN journals j USING (fact_key)
             WHERE j.journal_id IS NULL AND e.kind = ANY($1)",
            &[&posting_kinds],
        )
        .await?
        .get(0);
    // Every posting rule debits exactly the fact's gross (two legs of the amount; a settlement's cash + fee), in the
    // fact's currency; scoped accounts name the fact's own merchant or PSP. Settlement report lines (ADR 0015 §4):
    // a debit line debits its gross and its fee (the balance pays both); a credit line whose fixed fee exceeds its
    // gross debits only the fee (the balance loses the difference); a payout debits the bank account.
    r.amount_mismatches = client
        .query(
            "WITH moved AS (
                SELECT l.fact_key::text AS fact_key, l.kind, l.amount_minor, l.currency, l.fee_minor,
                       CASE l.kind
                           WHEN 'settled_debit' THEN l.amount_minor + coalesce(l.fee_minor, 0)
                           WHEN 'settled_credit' THEN greatest(l.amount_minor, coalesce(l.fee_minor, 0))
                           ELSE l.amount_minor END AS expected_debits,
                       sum(e.amount_minor) FILTER (WHERE e.amount_minor > 0)::bigint AS debits,
                       bool_and(e.currency = l.currency) AS same_currency,
                       coalesce(sum(e.amount_minor) FILTER (WHERE e.account = 'psp_fees'), 0)::bigint AS fees,
                       bool_and(CASE split_part(e.account, ':', 1)
                           WHEN 'merchant_payable' THEN e.account = 'merchant_payable:' || l.merchant_id
                           WHEN 'dispute_reserve' THEN e.account = 'dispute_reserve:' || l.merchant_id
                           WHEN 'psp_receivable' THEN e.account = 'psp_receivable:' || l.psp
                           WHEN 'fx_conversion' THEN e.account = 'fx_conversion:' || l.psp
                           WHEN 'cash' THEN e.account = 'cash:' || l.psp
                                OR (l.kind = 'settled_payout' AND e.account = 'cash:bank')
                           ELSE true END) AS scoped
                  FROM event_log l JOIN journals j ON j.fact_key = l.fact_key JOIN entries e ON e.journal_id = j.journal_id
                 GROUP BY l.fact_key, l.kind, l.amount_minor, l.currency, l.fee_minor, l.merchant_id, l.psp)
             SELECT fact_key, kind, amount_minor, currency, debits, same_currency, fees, fee_minor, scoped
               FROM moved
              WHERE debits IS DISTINCT FROM expected_debits
                 OR NOT same_currency
                 OR (coalesce(fee_minor, 0) > 0 AND fees <> fee_minor)
                 OR NOT scoped
              LIMIT 100",
            &[],
        )
        .await?
        .iter()
        .map(|row| {
            let (key, kind, amount, currency): (String, String, i64, String) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            let (debits, same_currency, fees, fee, scoped): (Option<i64>, bool, i64, Option<i64>, bool) =
                (row.get(4), row.get(5), row.get(6), row.get(7), row.get(8));
            format!(
                "fact {key} ({kind} {amount} {currency}, fee {fee:?}): its journal debits {debits:?}, fee leg {fees}, \
                 {}, {}",
                if same_currency { "same currency" } else { "another currency" },
                if scoped { "its own accounts" } else { "another merchant's or PSP's account" }
            )
        })
        .collect();
    let offsets = client
        .query(
            "WITH accounted AS (
                SELECT topic, kafka_partition AS p, kafka_offset AS o FROM event_log
                UNION ALL SELECT topic, kafka_partition, kafka_offset FROM sink_duplicates
                UNION ALL SELECT topic, kafka_partition, kafka_offset FROM sink_rejects)
             SELECT s.topic, s.kafka_partition, s.next_offset,
                    count(a.o), count(DISTINCT a.o), coalesce(min(a.o), s.next_offset), coalesce(max(a.o), s.next_offset - 1)
             FROM sink_offsets s LEFT JOIN accounted a ON a.topic = s.topic AND a.p = s.kafka_partition AND a.o < s.next_offset
             WHERE s.group_id = $1 GROUP BY 1, 2, 3",
            &[&group],
        )
        .await?;
    for row in offsets {
        let (topic, partition, next): (String, i32, i64) = (row.get(0), row.get(1), row.get(2));
        let (n, distinct, min, max): (i64, i64, i64, i64) = (row.get(3), row.get(4), row.get(5), row.get(6));
        if n != distinct {
            r.offset_problems.push(format!("{topic}[{partition}]: {} offsets accounted twice", n - distinct));
        }
        // Tally's topics start at offset 0 (no retention truncation yet): the accounted range must be [0, next).
        if next > 0 && (n == 0 || min != 0 || max != next - 1 || distinct != max - min + 1) {
            r.offset_problems.push(format!(
                "{topic}[{partition}]: offsets {min}..{max} hold {distinct} accounted records, next_offset {next}: gaps"
            ));
        }
    }
    r.corrections = count("SELECT count(*) FROM ledger_corrections").await?;
    r.correction_problems = client
        .query(
            "SELECT 'correction ' || c.correction_id || ' (' || c.cause || '): '
                    || CASE WHEN n.journals <> 1 THEN 'has ' || n.journals || ' journals, not one'
                            ELSE 'its entries do not hash to the approved ' || c.journal_sha256 END
               FROM ledger_corrections c
              CROSS JOIN LATERAL (SELECT count(*) AS journals FROM journals j WHERE j.correction_id = c.correction_id) n
              WHERE n.journals <> 1
                 OR encode(sha256(convert_to(ledger_correction_canonical(c.correction_id), 'UTF8')), 'hex')
                    <> c.journal_sha256
             UNION ALL
             SELECT 'entry ' || e.entry_id || ' names another fact or correction than its journal ' || j.journal_id
               FROM entries e JOIN journals j ON j.journal_id = e.journal_id
              WHERE e.correction_id IS DISTINCT FROM j.correction_id OR e.fact_key IS DISTINCT FROM j.fact_key
             LIMIT 100",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    r.open_orphans = count("SELECT count(*) FROM dq_exceptions WHERE kind = 'orphan' AND resolved_at IS NULL").await?;
    r.content_conflicts = count("SELECT count(*) FROM dq_exceptions WHERE kind = 'content_conflict'").await?;
    Ok(r)
}
