//! What range-based reconciliation costs: `cargo run --release -p
//! peers-benches --example reconcile_cost` runs it between two in-memory
//! sets of 10^3, 10^5 and 10^6 author heads that differ in 1, 100 and 10^4
//! authors (half changed heads, a quarter on each side only), and prints the
//! `Reconcile` messages, the round trips (as a session counts them), the
//! bytes both ways (each message encoded as on the wire, without the
//! channel's framing) and the time both sides spent.

use std::time::Instant;

use peers_engine::{Author, ChangeHash, Head};
use peers_net::{Message, Reconciler};

fn author(index: u64) -> Author {
    Author(*blake3::hash(&index.to_le_bytes()).as_bytes())
}

fn head(index: u64) -> Head {
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&index.to_le_bytes());
    Head {
        seq: index % 1000 + 1,
        hash: ChangeHash(hash),
    }
}

fn main() {
    println!("| authors | differ | messages | round trips | bytes both ways | time |");
    println!("|--------:|-------:|---------:|------------:|----------------:|-----:|");
    for authors in [1_000u64, 100_000, 1_000_000] {
        for differ in [1u64, 100, 10_000] {
            if differ > authors / 2 {
                continue;
            }
            let mut ours: Vec<(Author, Head)> =
                (0..authors).map(|i| (author(i), head(i))).collect();
            let mut theirs = ours.clone();
            // Spread the differences over the key space.
            let step = authors / differ;
            for k in 0..differ {
                let index = (k * step) as usize;
                match k % 4 {
                    0 | 1 => theirs[index].1.seq += 1,
                    2 => theirs[index].1 = head(authors + k),
                    _ => {}
                }
            }
            // A quarter only on our side, a quarter only on theirs.
            let only_ours: Vec<usize> = (0..differ)
                .filter(|k| k % 4 == 3)
                .map(|k| (k * step) as usize)
                .collect();
            for index in only_ours.iter().rev() {
                theirs.remove(*index);
            }
            theirs.extend((0..differ / 4).map(|k| (author(10 * authors + k), head(k))));
            ours.sort_by_key(|(author, _)| *author);
            theirs.sort_by_key(|(author, _)| *author);

            let started = Instant::now();
            let mut left = Reconciler::new(ours);
            let mut right = Reconciler::new(theirs);
            let mut message = left.initiate().expect("initiate");
            let mut bytes = Message::Reconcile(message.clone())
                .encode()
                .expect("encodes")
                .len();
            let mut messages = 1u32;
            let mut right_turn = true;
            loop {
                let side = if right_turn { &mut right } else { &mut left };
                let reply = side.respond(&message).expect("respond");
                messages += 1;
                bytes += Message::Reconcile(reply.clone())
                    .encode()
                    .expect("encodes")
                    .len();
                if reply.is_empty() {
                    break;
                }
                message = reply;
                right_turn = !right_turn;
            }
            let took = started.elapsed();
            let found = left.differences().len();
            assert_eq!(found, right.differences().len());
            println!(
                "| {authors} | {found} | {messages} | {} | {bytes} | {took:.2?} |",
                1 + messages / 2
            );
        }
    }
}
