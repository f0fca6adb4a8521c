//! The RFC 6962 Merkle tree (Certificate Transparency's log structure, RFC 9162 §2.1): leaf and node hashes, the
//! tree hash of any prefix, inclusion and consistency proofs, and their verification. Pure functions over the
//! leaves' hashes; the same hashes as Go's `golang.org/x/mod/sumdb/tlog` (`RecordHash`, `NodeHash`).

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// A leaf: SHA-256(0x00 ‖ record).
pub fn leaf_hash(record: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(record);
    h.finalize().into()
}

/// An inner node: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two smaller than `n` (n ≥ 2).
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// MTH(D[n]): the tree hash of these leaves (the empty tree hashes the empty string).
pub fn tree_hash(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&tree_hash(&leaves[..k]), &tree_hash(&leaves[k..]))
        }
    }
}

/// PATH(m, D[n]): the inclusion proof of leaf `index` in the tree of these leaves.
pub fn inclusion_proof(index: usize, leaves: &[Hash]) -> Option<Vec<Hash>> {
    (index < leaves.len()).then(|| path(index, leaves))
}

fn path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = split(n);
    let (mut p, sibling) = if m < k {
        (path(m, &leaves[..k]), tree_hash(&leaves[k..]))
    } else {
        (path(m - k, &leaves[k..]), tree_hash(&leaves[..k]))
    };
    p.push(sibling);
    p
}

/// PROOF(m, D[n]): that the tree of the first `m` leaves is a prefix of the tree of all of them.
pub fn consistency_proof(m: usize, leaves: &[Hash]) -> Option<Vec<Hash>> {
    (m <= leaves.len()).then(|| if m == 0 { Vec::new() } else { subproof(m, leaves, true) })
}

fn subproof(m: usize, leaves: &[Hash], whole: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if whole { Vec::new() } else { vec![tree_hash(leaves)] };
    }
    let k = split(n);
    let (mut p, sibling) = if m <= k {
        (subproof(m, &leaves[..k], whole), tree_hash(&leaves[k..]))
    } else {
        (subproof(m - k, &leaves[k..], false), tree_hash(&leaves[..k]))
    };
    p.push(sibling);
    p
}

/// The tree's levels, built once (bottom-up, pairs left to right, an unpaired last node carried up unchanged: the
/// same tree as RFC 6962's recursive split), for inclusion proofs in O(log n) and the root of any prefix.
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    pub fn new(leaves: &[Hash]) -> Tree {
        let mut levels = vec![leaves.to_vec()];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let below = levels.last().expect("non-empty");
            let up = below.chunks(2).map(|p| if p.len() == 2 { node_hash(&p[0], &p[1]) } else { p[0] }).collect();
            levels.push(up);
        }
        Tree { levels }
    }

    pub fn size(&self) -> usize {
        self.levels[0].len()
    }

    /// PATH(index, D[size]) for the whole tree.
    pub fn inclusion_proof(&self, index: usize) -> Option<Vec<Hash>> {
        if index >= self.size() {
            return None;
        }
        let mut proof = Vec::new();
        let mut i = index;
        for level in &self.levels[..self.levels.len() - 1] {
            let sibling = i ^ 1;
            if sibling < level.len() {
                proof.push(level[sibling]);
            }
            i >>= 1;
        }
        Some(proof)
    }

    /// MTH(D[0:size]) for any prefix, from the complete subtrees the prefix is made of (O(log n)).
    pub fn root(&self, size: usize) -> Option<Hash> {
        if size > self.size() {
            return None;
        }
        if size == 0 {
            return Some(tree_hash(&[]));
        }
        // The prefix splits into aligned perfect subtrees, largest first; they fold from the right.
        let mut parts = Vec::new();
        let mut start = 0;
        for level in (0..self.levels.len()).rev() {
            let width = 1usize << level;
            if size - start >= width {
                parts.push(self.levels[level][start / width]);
                start += width;
            }
        }
        let mut acc = parts.pop().expect("size > 0");
        while let Some(left) = parts.pop() {
            acc = node_hash(&left, &acc);
        }
        Some(acc)
    }
}

/// RFC 9162 §2.1.3.2: whether `proof` shows `leaf` at `index` in the tree of `size` leaves with hash `root`.
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode, mut r) = (index, size - 1, *leaf);
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && r == *root
}

/// RFC 9162 §2.1.4.2: whether `proof` shows the tree of `first` leaves (hash `first_root`) is a prefix of the tree
/// of `second` leaves (hash `second_root`).
pub fn verify_consistency(first: u64, second: u64, first_root: &Hash, second_root: &Hash, proof: &[Hash]) -> bool {
    if first > second {
        return false;
    }
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    if first == 0 {
        return proof.is_empty() && *first_root == tree_hash(&[]);
    }
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (first - 1, second - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && fr == *first_root && sr == *second_root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(format!("record {i}").as_bytes())).collect()
    }

    #[test]
    fn every_inclusion_and_consistency_proof_verifies_and_a_wrong_one_does_not() {
        for n in 1..=33 {
            let all = leaves(n);
            let root = tree_hash(&all);
            for i in 0..n {
                let proof = inclusion_proof(i, &all).unwrap();
                assert!(verify_inclusion(i as u64, n as u64, &all[i], &proof, &root), "{i} in {n}");
                let other = leaf_hash(b"another record");
                assert!(!verify_inclusion(i as u64, n as u64, &other, &proof, &root), "forged leaf {i} in {n}");
                if n > 1 {
                    assert!(!verify_inclusion(((i + 1) % n) as u64, n as u64, &all[i], &proof, &root), "moved {i}");
                }
            }
            let tree = Tree::new(&all);
            for i in 0..n {
                assert_eq!(tree.inclusion_proof(i), inclusion_proof(i, &all), "levels' proof {i} in {n}");
            }
            for m in 0..=n {
                assert_eq!(tree.root(m), Some(tree_hash(&all[..m])), "prefix {m} of {n}");
                let proof = consistency_proof(m, &all).unwrap();
                let first = tree_hash(&all[..m]);
                assert!(verify_consistency(m as u64, n as u64, &first, &root, &proof), "{m} ⊑ {n}");
                if m > 0 && m < n {
                    let mut forked = all[..m].to_vec();
                    forked[m - 1] = leaf_hash(b"rewritten");
                    assert!(
                        !verify_consistency(m as u64, n as u64, &tree_hash(&forked), &root, &proof),
                        "fork {m} {n}"
                    );
                }
            }
        }
    }

    /// RFC 6962's structure by hand for three leaves: ((a b) c).
    #[test]
    fn the_tree_hash_is_rfc_6962s() {
        let l = leaves(3);
        assert_eq!(tree_hash(&l), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
        assert_eq!(tree_hash(&[]), <[u8; 32]>::from(Sha256::digest(b"")));
        assert_eq!(inclusion_proof(2, &l).unwrap(), vec![node_hash(&l[0], &l[1])]);
        assert_eq!(inclusion_proof(0, &l).unwrap(), vec![l[1], l[2]]);
    }
}
