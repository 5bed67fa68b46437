//! The demo customers' cards and a few months of transactions: the same
//! cards, amounts and descriptions on every seed, dated back from the day
//! of seeding so they look recent.

use contract::Account;

use crate::store::{NewCard, NewTransaction};

/// Transactions per account, about one every two and a half days.
const PER_ACCOUNT: u32 = 36;

/// The demo cards of `username`: (id, account, brand, last4).
pub(super) fn cards(username: &str) -> Vec<NewCard> {
    let list: &[(&str, &str, &str, &str)] = match username {
        "alice" => &[
            ("card-1101", "acc-1001", "visa", "4821"),
            ("card-1102", "acc-1001", "mastercard", "7730"),
        ],
        "bruno" => &[("card-2101", "acc-2001", "mastercard", "0392")],
        "chen" => &[
            ("card-3101", "acc-3001", "visa", "5517"),
            ("card-3103", "acc-3003", "amex", "1009"),
        ],
        _ => &[],
    };
    list.iter()
        .map(|(id, account, brand, last4)| NewCard {
            id: (*id).into(),
            account_id: (*account).into(),
            brand: (*brand).into(),
            last4: (*last4).into(),
        })
        .collect()
}

/// What a booking can be: description, sign, cents from and range, and
/// whether it has a counterparty IBAN.
const KINDS: [(&str, i64, i64, i64, bool); 8] = [
    ("Grocery store", -1, 1_250, 9_000, false),
    ("Coffee bar", -1, 320, 600, false),
    ("Online bookshop", -1, 1_499, 4_000, false),
    ("Transfer from employer", 1, 280_000, 40_000, true),
    ("Rent", -1, 95_000, 1, true),
    ("Public transport", -1, 290, 2_000, false),
    ("Transfer to a friend", -1, 1_000, 15_000, true),
    ("Restaurant", -1, 2_400, 8_000, false),
];

/// A small deterministic generator (64-bit LCG), seeded per account.
struct Sequence(u64);

impl Sequence {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// The transactions of `account`, newest first, the newest two pending.
/// `today` is the start of the seeding day (epoch seconds, UTC).
pub(super) fn transactions(account: &Account, today: i64) -> Vec<NewTransaction> {
    let digits: String = account.id.chars().filter(char::is_ascii_digit).collect();
    let mut seq = Sequence(account.id.bytes().fold(17, |h, b| h * 31 + u64::from(b)));
    (0..PER_ACCOUNT)
        .map(|i| {
            let (description, sign, from, range, with_iban) = KINDS[(seq.next() % KINDS.len() as u64) as usize];
            let cents = from + (seq.next() % range.max(1) as u64) as i64;
            let days_back = 1 + i64::from(i) * 5 / 2;
            let booked_at = today - days_back * 86_400 + 8 * 3600 + (seq.next() % (12 * 3600)) as i64;
            let iban = with_iban.then(|| {
                format!(
                    "DE{:02}{:018}",
                    seq.next() % 100,
                    seq.next() * 1_000_003 % 10u64.pow(18)
                )
            });
            NewTransaction {
                id: format!("txn-{digits}-{i:03}"),
                account_id: account.id.clone(),
                booked_at,
                amount: format!("{}{}.{:02}", if sign < 0 { "-" } else { "" }, cents / 100, cents % 100),
                currency: account.balance.currency.clone(),
                description: description.into(),
                status: if i < 2 { "pending" } else { "booked" }.into(),
                counterparty_iban: iban,
            }
        })
        .collect()
}
