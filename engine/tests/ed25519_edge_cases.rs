//! Every replica must reach the same verdict on every signature, whichever
//! path checked it (docs/DESIGN.md "Dependencies"). The edge-case vectors of
//! "Taming the many EdDSAs" (Chalkias, Garillot, Nikolaenko, 2020; the
//! ed25519-speccheck cases) are checked one at a time and inside batches of
//! valid signatures, in every position: the verdicts must agree, and match
//! the rule we chose (strict encodings, no small-order A or R, reduced s,
//! cofactored equation), recorded per case below with the fault named.
//!
//! Cases 0 to 11 are speccheck's published twelve, in its order
//! (novifinancial/ed25519-speccheck `cases.txt`, the set ed25519-zebra and
//! others test). Cases 12 and 13 are the two non-canonical R vectors of an
//! earlier revision of its `cases.json` (commit 336651b), which held ten
//! cases: R = `ed ff .. ff 7f`, a y of p. This file held that revision's ten
//! as cases 0 to 9 before the published 8 to 11 were added.

use peers_engine::{SignatureFault, verify_ed25519_strict};

/// (message, public key, signature, verdict under our rules (`None`:
/// accepted; else the fault named), why).
const CASES: [(&str, &str, &str, Option<SignatureFault>, &str); 14] = [
    (
        "8c93255d71dcab10e8f379c26200f3c7bd5f09d9bc3068d3ef4edeb4853022b6",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a0000000000000000000000000000000000000000000000000000000000000000",
        Some(SignatureFault::WeakKey),
        "0: s = 0, small-order A and R (the key is checked first)",
    ),
    (
        "9bd9f44f4dcc75bd531b56b2cd280b0bb38fc1cd6d1230e14861d861de092e79",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43a5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04",
        Some(SignatureFault::WeakKey),
        "1: small-order A, mixed-order R",
    ),
    (
        "aebf3f2601a0c8c5d39cc7d8911642f740b78168218da8471772b35f9d35b9ab",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa8c4bd45aecaca5b24fb97bc10ac27ac8751a7dfe1baff8b953ec9f5833ca260e",
        Some(SignatureFault::NonCanonical),
        "2: mixed-order A, small-order R",
    ),
    (
        "9bd9f44f4dcc75bd531b56b2cd280b0bb38fc1cd6d1230e14861d861de092e79",
        "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
        "9046a64750444938de19f227bb80485e92b83fdb4b6506c160484c016cc1852f87909e14428a7a1d62e9f22f3d3ad7802db02eb2e688b6c52fcd6648a98bd009",
        None,
        "3: mixed-order A, passes both equations",
    ),
    (
        "e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec4011eaccd55b53f56c",
        "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
        "160a1cb0dc9c0258cd0a7d23e94d8fa878bcb1925f2c64246b2dee1796bed5125ec6bc982a269b723e0668e540911a9a6a58921d6925e434ab10aa7940551a09",
        None,
        "4: mixed-order A, cofactored only",
    ),
    (
        "e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec4011eaccd55b53f56c",
        "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
        "21122a84e0b5fca4052f5b1235c80a537878b38f3142356b2c2384ebad4668b7e40bc836dac0f71076f9abe3a53f9c03c1ceeeddb658d0030494ace586687405",
        None,
        "5: mixed-order R, cofactored only",
    ),
    (
        "85e241a07d148b41e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec40",
        "442aad9f089ad9e14647b1ef9099a1ff4798d78589e66f28eca69c11f582a623",
        "e96f66be976d82e60150baecff9906684aebb1ef181f67a7189ac78ea23b6c0e547f7690a0e2ddcd04d87dbc3490dc19b3b3052f7ff0538cb68afb369ba3a514",
        Some(SignatureFault::NonCanonical),
        "6: s not reduced (s > l)",
    ),
    (
        "85e241a07d148b41e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec40",
        "442aad9f089ad9e14647b1ef9099a1ff4798d78589e66f28eca69c11f582a623",
        "8ce5b96c8f26d0ab6c47958c9e68b937104cd36e13c33566acd2fe8d38aa19427e71f98a473474f2f13f06f97c20d58cc3f54b8bd0d272f42b695dd7e89a8c22",
        Some(SignatureFault::NonCanonical),
        "7: s not reduced (s >> l)",
    ),
    (
        "9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff03be9678ac102edcd92b0210bb34d7428d12ffc5df5f37e359941266a4e35f0f",
        Some(SignatureFault::NonCanonical),
        "8: non-canonical R (x = 0 with the sign bit set: small order), hash over R reduced",
    ),
    (
        "9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffca8c5b64cd208982aa38d4936621a4775aa233aa0505711d8fdcfdaa943d4908",
        Some(SignatureFault::NonCanonical),
        "9: non-canonical R (x = 0 with the sign bit set: small order), hash over R as sent",
    ),
    (
        "e96b7021eb39c1a163b6da4e3093dcd3f21387da4cc4572be588fafae23c155b",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "a9d55260f765261eb9b84e106f665e00b867287a761990d7135963ee0a7d59dca5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04",
        Some(SignatureFault::WeakKey),
        "10: non-canonical A (x = 0 with the sign bit set: small order), hash over A reduced",
    ),
    (
        "39a591f5321bbe07fd5a23dc2f39d025d74526615746727ceefd6e82ae65c06f",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "a9d55260f765261eb9b84e106f665e00b867287a761990d7135963ee0a7d59dca5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04",
        Some(SignatureFault::WeakKey),
        "11: non-canonical A (x = 0 with the sign bit set: small order), hash over A as sent",
    ),
    (
        "fdaebc429f4a735932a160da1301080c13280eea8bc280d1b392c6b9e6ba3a5a",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f454d370c8d9fc323a41450f8d513eafeb5b0697390c1e505a0d4ddc71f566607",
        Some(SignatureFault::NonCanonical),
        "12: non-canonical R (y = p), earlier revision",
    ),
    (
        "84b698d39be126ff55fe45079e6c8bf64a0d7db6994560b4e96b7021eb39c1a1",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f084d5b99c2a9463d9c8bd5026916996984eeec87ddf1d3be329006ace1b37b09",
        Some(SignatureFault::NonCanonical),
        "13: non-canonical R (y = p), earlier revision",
    ),
];

struct Case {
    message: Vec<u8>,
    key: [u8; 32],
    signature: [u8; 64],
}

fn case(index: usize) -> Case {
    let (message, key, signature, _, _) = CASES[index];
    Case {
        message: hex::decode(message).expect("hex"),
        key: hex::decode(key).expect("hex").try_into().expect("32 bytes"),
        signature: hex::decode(signature)
            .expect("hex")
            .try_into()
            .expect("64 bytes"),
    }
}

/// Valid signatures to surround a case with.
fn fillers() -> Vec<Case> {
    use ed25519_dalek::{Signer, SigningKey};
    (1..=3u8)
        .map(|seed| {
            let key = SigningKey::from_bytes(&[seed; 32]);
            let message = vec![seed; 40];
            Case {
                signature: key.sign(&message).to_bytes(),
                key: key.verifying_key().to_bytes(),
                message,
            }
        })
        .collect()
}

fn verdict(cases: &[&Case]) -> Result<(), (usize, SignatureFault)> {
    let items: Vec<(&[u8], &[u8; 32], &[u8; 64])> = cases
        .iter()
        .map(|case| (case.message.as_slice(), &case.key, &case.signature))
        .collect();
    verify_ed25519_strict(&items)
}

#[test]
fn single_and_batch_agree_on_every_edge_case() {
    let fillers = fillers();
    for (index, &(_, _, _, fault, why)) in CASES.iter().enumerate() {
        let edge = case(index);
        let alone = verdict(&[&edge]);
        assert_eq!(
            alone,
            fault.map_or(Ok(()), |fault| Err((0, fault))),
            "case {index} ({why}) alone"
        );
        for position in 0..=fillers.len() {
            let mut batch: Vec<&Case> = fillers.iter().collect();
            batch.insert(position, &edge);
            let in_batch = verdict(&batch);
            assert_eq!(
                in_batch,
                fault.map_or(Ok(()), |fault| Err((position, fault))),
                "case {index} ({why}) at position {position} of a batch"
            );
        }
    }
}

#[test]
fn all_accepted_cases_verify_together() {
    let accepted: Vec<Case> = (0..CASES.len())
        .filter(|&i| CASES[i].3.is_none())
        .map(case)
        .collect();
    assert_eq!(accepted.len(), 3, "cases 3, 4 and 5");
    assert_eq!(verdict(&accepted.iter().collect::<Vec<_>>()), Ok(()));
}

/// A batch sums the terms of one key into one (engine/src/signature.rs):
/// a bad signature among good ones by the same key, a key with a torsion
/// component (cases 3 to 5) or an ordinary one, is still found and named.
#[test]
fn a_bad_signature_among_good_ones_by_the_same_key_is_named() {
    use ed25519_dalek::{Signer, SigningKey};
    let mut torsioned: Vec<Case> = [3, 4, 5].into_iter().map(case).collect();
    let mut altered = case(3);
    altered.message[0] ^= 1;
    torsioned.insert(1, altered);
    assert_eq!(
        verdict(&torsioned.iter().collect::<Vec<_>>()),
        Err((1, SignatureFault::Mismatch))
    );

    let key = SigningKey::from_bytes(&[9; 32]);
    let mut same_key: Vec<Case> = (0..40u8)
        .map(|index| {
            let message = vec![index; 40];
            Case {
                signature: key.sign(&message).to_bytes(),
                key: key.verifying_key().to_bytes(),
                message,
            }
        })
        .collect();
    assert_eq!(verdict(&same_key.iter().collect::<Vec<_>>()), Ok(()));
    // Another message's valid signature by the same key.
    same_key[17].signature = same_key[18].signature;
    assert_eq!(
        verdict(&same_key.iter().collect::<Vec<_>>()),
        Err((17, SignatureFault::Mismatch))
    );
}
