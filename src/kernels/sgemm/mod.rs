//! Single-threaded f32 GEMM for AVX-512 CPUs, BLIS style:
//! `C = A · B + beta · C`, with C row-major and A, B at any strides.
//!
//! The loops, outermost first:
//!
//! 1. `jc`: blocks of [`NC`] columns of B and C.
//! 2. `pc`: blocks of [`KC`] steps of the inner dimension, in increasing
//!    order. The block `B[pc.., jc..]` is packed into panels of [`NR`]
//!    columns (`KC x NR` each, step by step): it stays in L2 (1 MB).
//! 3. `ir`: [`MR`] rows of A and C: `A[ir.., pc..]` is packed into one
//!    panel (`MR` values per step, `MR x KC`: 14 KB) unless A is
//!    row-major (then the micro-kernel reads its rows where they lie, as
//!    fast, without the cost of a transpose), or stored by columns for a
//!    C of a tile or two across (read where it lies too, see
//!    [`COLUMNS_UP_TO`]); it stays in L1 while
//! 4. `jr` runs the micro-kernel ([`avx512::tile`]) on it and each B panel
//!    in turn, for one `MR x NR` tile of C. Meanwhile the next rows of A
//!    are prefetched, a share per tile.
//!
//! Determinism: the micro-kernel keeps one accumulator per element of C
//! and sums its `KC` steps in increasing order; each block's sum is then
//! added to C (or replaces it, for the first block when `beta` is 0).
//! So every element of C is summed in an order that depends on `k` alone,
//! never on `m`, `n`, or where the element lies in a tile: a product of a
//! block of rows or columns of C equals that block of the whole product,
//! bit for bit (what `gemm::matmul_par` and the column ranges of
//! `gemm::matmul_packed_par` rely on).
//!
//! Speed, single-threaded, GFLOP/s (best of 5, `cargo run --release
//! --example gemm_bench`), on a shared Sapphire-Rapids-class Xeon core
//! whose FMA peak is about 175 (48 KB L1d, 2 MB L2):
//!
//! | m x k x n              | layout        | sgemm | matrixmultiply |
//! |------------------------|---------------|-------|----------------|
//! | 2916 x 2400 x 256      |               | 148   | 127            |
//! | 676 x 2304 x 384       |               | 150   | 131            |
//! | 676 x 3456 x 384       |               | 152   | 133            |
//! | 6050 x 363 x 96        |               | 150   | 129            |
//! | 2400 x 2916 x 256      | A transposed  | 131   | 125            |
//! | 2916 x 256 x 2400      | B transposed  | 152   | 129            |
//! | 7200 x 288 x 32        |               | 127   | 88             |
//! | 8192 x 27 x 32         |               | 135   | 94             |
//! | 16 x 9216 x 4096       |               | 47    | 34             |
//!
//! The micro-kernel alone, on panels in L1 and L2, reaches about 169
//! (97% of peak); the rest goes to C's and A's trips through memory and
//! to packing.

mod avx512;

use std::cell::RefCell;
use std::ops::Range;

/// Rows of A (and C) per micro-tile.
pub(crate) const MR: usize = 14;
/// Columns of B (and C) per micro-tile: two zmm registers.
pub(crate) const NR: usize = 32;
/// Steps of the inner dimension per packed block. Fixed: the order of
/// summation depends on it.
const KC: usize = 256;
/// Columns of B packed at once (`KC x NC` values: 1 MB, in L2).
const NC: usize = 1024;

/// 16 values on a 64-byte boundary: the unit of the packing buffers.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Aligned([f32; 16]);

/// The packing buffers of one thread, kept between calls.
#[derive(Default)]
struct Scratch {
    a: Vec<Aligned>,
    b: Vec<Aligned>,
    /// C transposed, for [`sgemm_transposed`].
    c_t: Vec<Aligned>,
    /// The cache lines of A's next panel, for [`blocks`] to prefetch
    /// (kept here: zeroing a fresh array on the stack per call cost 1%
    /// of an inference pass of cifar10-cnn, whose Winograd products are
    /// many small calls).
    lines: Vec<usize>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// At least `floats` values of `buffer`, 64-byte aligned; grows it (once)
/// when it is too short.
fn reserve(buffer: &mut Vec<Aligned>, floats: usize) -> *mut f32 {
    let blocks = floats.div_ceil(16);
    if buffer.len() < blocks {
        buffer.resize(blocks, Aligned([0.0; 16]));
    }
    buffer.as_mut_ptr().cast()
}

/// The buffer of [`MAX_LINES`] addresses that [`blocks`] lists A's next
/// panel in; grows it (once).
fn lines(buffer: &mut Vec<usize>) -> &mut [usize; MAX_LINES] {
    if buffer.len() < MAX_LINES {
        buffer.resize(MAX_LINES, 0);
    }
    (&mut buffer[..MAX_LINES])
        .try_into()
        .expect("MAX_LINES values")
}

/// Where a micro-kernel writes its tile of C.
#[derive(Clone, Copy)]
struct CTile {
    /// Element `(0, 0)` of the tile.
    c: *mut f32,
    /// The row stride of C.
    rsc: isize,
    /// Bit `j` set: column `j` of the tile lies inside C.
    mask: u32,
    /// Whether the tile is added to C (else it replaces it).
    accumulate: bool,
}

/// The micro-kernel for tiles of `r` rows, `r` in `1..=MR`: `(kc, a, A's
/// stride, b, B's row stride, c, prefetch)`.
type Tile = unsafe fn(usize, *const f32, isize, *const f32, isize, CTile, &[usize]);

/// Where the micro-kernels find a block of B: packed into panels (panel
/// `q` at `at + q * NR * kc`), or `InPlace` with rows `rsb` apart (`B[p,
/// j]` at `at + p * rsb + j`).
#[derive(Clone, Copy)]
enum BBlock {
    Packed(*const f32),
    InPlace(*const f32, isize),
}

/// How the micro-kernel finds a panel of A: its `LAYOUT` parameter.
struct ALayout;

impl ALayout {
    /// Packed: step `p` holds `A[0..MR, p]` at `p * MR`.
    const PANEL: u8 = 0;
    /// Where it lies, stored by rows: `A[i, p]` at `i * stride + p`.
    const ROWS: u8 = 1;
    /// Where it lies, stored by columns: `A[i, p]` at `p * stride + i`.
    const COLUMNS: u8 = 2;
}

/// The micro-kernels of a product, for 1 to `MR` rows, by the layout of
/// A's panel (see [`ALayout`]) against a packed B; and for an A by
/// columns against a B read in place.
struct Tiles {
    panel: [Tile; MR],
    rows: [Tile; MR],
    columns: [Tile; MR],
    columns_b_in_place: [Tile; MR],
}

impl Tiles {
    const fn new<const STREAM: bool>() -> Self {
        Tiles {
            panel: tiles::<{ ALayout::PANEL }, STREAM, false>(),
            rows: tiles::<{ ALayout::ROWS }, STREAM, false>(),
            columns: tiles::<{ ALayout::COLUMNS }, STREAM, false>(),
            columns_b_in_place: tiles::<{ ALayout::COLUMNS }, STREAM, true>(),
        }
    }
}

/// The tiles of most products: B's panels are packed just before, into
/// the cache.
const CACHED: Tiles = Tiles::new::<false>();

/// The tiles of a few rows against a B packed beforehand, streamed from
/// memory (see `avx512::tile`).
const STREAMED: Tiles = Tiles::new::<true>();

/// The micro-kernels for 1 to `MR` rows.
const fn tiles<const LAYOUT: u8, const STREAM: bool, const B_IN_PLACE: bool>() -> [Tile; MR] {
    [
        avx512::tile::<1, LAYOUT, STREAM, B_IN_PLACE>,
        avx512::tile::<2, LAYOUT, STREAM, B_IN_PLACE>,
        avx512::tile::<3, LAYOUT, STREAM, B_IN_PLACE>,
        avx512::tile::<4, LAYOUT, STREAM, B_IN_PLACE>,
        avx512::tile::<5, LAYOUT, STREAM, B_IN_PLACE>,
        avx512::tile::<6, LAYOUT, STREAM, B_IN_PLACE>,
        avx512::tile::<7, LAYOUT, STREAM, B_IN_PLACE>,
        avx512::tile::<8, LAYOUT, STREAM, B_IN_PLACE>,
        avx512::tile::<9, LAYOUT, STREAM, B_IN_PLACE>,
        avx512::tile::<10, LAYOUT, STREAM, B_IN_PLACE>,
        avx512::tile::<11, LAYOUT, STREAM, B_IN_PLACE>,
        avx512::tile::<12, LAYOUT, STREAM, B_IN_PLACE>,
        avx512::tile::<13, LAYOUT, STREAM, B_IN_PLACE>,
        avx512::tile::<14, LAYOUT, STREAM, B_IN_PLACE>,
    ]
}

/// `C = A · B + beta · C` for the `m x k` matrix A (element `(i, p)` at
/// `a + i * rsa + p * csa`), the `k x n` matrix B (`(p, j)` at
/// `b + p * rsb + j * csb`) and the `m x n` matrix C (`(i, j)` at
/// `c + i * rsc + j`). `beta` is 0 (C is overwritten, never read) or 1.
///
/// # Safety
/// The CPU must have AVX-512F and FMA (`crate::kernels::has_avx512`).
/// Every element of A and B the strides reach must be readable, every
/// element of C readable and writable, and C must not overlap A or B.
#[allow(clippy::too_many_arguments)] // the BLAS-like contract of matrixmultiply::sgemm
pub(crate) unsafe fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    rsc: isize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // C = beta · C, with beta = 0 writing zeros (C may hold NaN).
        for i in 0..m {
            // SAFETY: row i of C is valid for writes (the caller's promise).
            let row = unsafe { std::slice::from_raw_parts_mut(c.offset(i as isize * rsc), n) };
            if beta == 0.0 {
                row.fill(0.0);
            } else {
                row.iter_mut().for_each(|v| *v *= beta);
            }
        }
        return;
    }
    if (m <= FEW_ROWS || 4 * m <= n) && rsb == 1 && csb != 1 && n >= NR {
        // SAFETY: the caller's promises.
        return unsafe { sgemm_transposed(m, k, n, (a, rsa, csa), (b, csb), beta, (c, rsc)) };
    }
    // An A by columns for a C of a tile or two across, against a B by
    // rows for a few panels of A: neither is worth a copy (Winograd's
    // kernel-gradient products).
    let b_in_place = csb == 1 && reads_columns_in_place(rsa, csa, n) && m <= B_IN_PLACE_UP_TO;
    SCRATCH.with(|scratch| {
        let scratch = &mut *scratch.borrow_mut();
        let packed_b = reserve(&mut scratch.b, KC * NC.min(n.next_multiple_of(NR)));
        let packed_a = reserve(&mut scratch.a, KC * MR);
        let a = (a, rsa, csa);
        // SAFETY: the caller's promises; each block of B is packed into
        // the buffer, which holds its panels, before its tiles read it.
        unsafe {
            blocks(
                m,
                k,
                n,
                a,
                beta,
                (c, rsc),
                (packed_a, lines(&mut scratch.lines)),
                &CACHED,
                |pc, kc, jc, nc| {
                    if b_in_place {
                        return BBlock::InPlace(at(b, pc, rsb, jc, csb), rsb);
                    }
                    pack_b(kc, nc, at(b, pc, rsb, jc, csb), rsb, csb, packed_b);
                    BBlock::Packed(packed_b)
                },
            )
        }
    });
}

/// Rows of C up to which a B read transposed is better not packed (see
/// [`sgemm_transposed`]), and up to which a product reads each value of
/// a packed B too few times for it to stay in cache (see
/// [`sgemm_packed_b`]).
pub(crate) const FEW_ROWS: usize = 2 * MR;

/// [`sgemm`] for a C of few rows (or rows few against its columns) and a
/// B stored transposed (`B[p, j]` at `b + p + j * csb`: a dense layer's
/// input gradient `dy · Wᵀ`). Packing such a B costs as much as the
/// product itself, so this computes `Cᵀ = Bᵀ · Aᵀ` instead, with the
/// row-major `Bᵀ` read where it lies and the small `Aᵀ` packed, into a
/// buffer that starts as `Cᵀ` (for `beta` 1), then copies it back
/// transposed. Each element is the same products summed in the same
/// order, so C gets the same bits as from [`sgemm`]'s own loops.
/// (cifar10-cnn's dense input gradient, 128 x 512 · 512 x 2304: the
/// layer's backward pass 6.9 -> 5.5 ms on one core.)
///
/// # Safety
/// As for [`sgemm`].
unsafe fn sgemm_transposed(
    m: usize,
    k: usize,
    n: usize,
    (a, rsa, csa): (*const f32, isize, isize),
    (b, csb): (*const f32, isize),
    beta: f32,
    (c, rsc): (*mut f32, isize),
) {
    SCRATCH.with(|scratch| {
        let scratch = &mut *scratch.borrow_mut();
        let c_t = reserve(&mut scratch.c_t, n * m);
        let packed_b = reserve(&mut scratch.b, KC * NC.min(m.next_multiple_of(NR)));
        let packed_a = reserve(&mut scratch.a, KC * MR);
        // C[i, j] at c + i * rsc + j; Cᵀ[j, i] at c_t + j * m + i.
        let c_at = |i: usize, j: usize| c.wrapping_offset(i as isize * rsc + j as isize);
        if beta != 0.0 {
            for j in 0..n {
                for i in 0..m {
                    // SAFETY: C[i, j] is readable (the caller's promise)
                    // and c_t holds n * m values.
                    unsafe { *c_t.add(j * m + i) = *c_at(i, j) };
                }
            }
        }
        // SAFETY: Bᵀ (n x k, row stride csb) and Aᵀ (k x m, strides csa,
        // rsa) are B and A read the other way (the caller's promises);
        // c_t holds the n x m values of Cᵀ; each block of Aᵀ is packed
        // into the buffer, which holds its panels, before its tiles read it.
        unsafe {
            blocks(
                n,
                k,
                m,
                (b, csb, 1),
                beta,
                (c_t, m as isize),
                (packed_a, lines(&mut scratch.lines)),
                &CACHED,
                |pc, kc, jc, nc| {
                    pack_b(kc, nc, at(a, pc, csa, jc, rsa), csa, rsa, packed_b);
                    BBlock::Packed(packed_b)
                },
            );
        }
        for i in 0..m {
            for j in 0..n {
                // SAFETY: C[i, j] is writable (the caller's promise).
                unsafe { *c_at(i, j) = *c_t.add(j * m + i) };
            }
        }
    });
}

/// Values that [`pack_whole_b`] writes for a `k x n` matrix B.
pub(crate) fn packed_b_len(k: usize, n: usize) -> usize {
    k * n.next_multiple_of(NR)
}

/// Where [`pack_whole_b`] puts the block of steps `pc..` and columns
/// `jc..`: after the `k x jc` columns before it (whole panels: `NC` is a
/// multiple of `NR`), `pc` steps of this block's padded width in.
fn packed_block_at(k: usize, n: usize, pc: usize, jc: usize) -> usize {
    k * jc + pc * NC.min(n - jc).next_multiple_of(NR)
}

/// Packs all of the `k x n` matrix B (strides `rsb`, `csb`) into `dst`,
/// block by block as [`sgemm`] packs them one at a time, for
/// [`sgemm_packed_b`] to reuse in many products.
///
/// # Safety
/// The CPU must have AVX-512F; every element of B must be readable and
/// `dst` must hold [`packed_b_len`] values, 64-byte aligned.
pub(crate) unsafe fn pack_whole_b(
    k: usize,
    n: usize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    dst: *mut f32,
) {
    for jc in (0..n).step_by(NC) {
        for pc in (0..k).step_by(KC) {
            let (kc, nc) = (KC.min(k - pc), NC.min(n - jc));
            // SAFETY: the block is readable and its panels lie inside dst
            // (the caller's promises).
            unsafe {
                let block = dst.add(packed_block_at(k, n, pc, jc));
                pack_b(kc, nc, at(b, pc, rsb, jc, csb), rsb, csb, block);
            }
        }
    }
}

/// [`sgemm`] with B already packed by [`pack_whole_b`] at `packed`, for
/// the columns `cols` of B and C only (`c` and `packed` stay those of the
/// whole matrices). `cols` starts on a panel (a multiple of `NR`) and
/// either on a block of `NC` columns or ends inside the block it starts
/// in (see [`column_ranges`]). With `streamed`, B is read from memory
/// once (a few rows of A against a large B): the tiles prefetch it ahead
/// (see `avx512::tile`).
///
/// # Safety
/// As for [`sgemm`], with `packed` holding what [`pack_whole_b`] wrote
/// for a `k x n` matrix.
#[allow(clippy::too_many_arguments)] // sgemm's contract, B packed
pub(crate) unsafe fn sgemm_packed_b(
    m: usize,
    k: usize,
    n: usize,
    (a, rsa, csa): (*const f32, isize, isize),
    packed: *const f32,
    beta: f32,
    (c, rsc): (*mut f32, isize),
    cols: Range<usize>,
    streamed: bool,
) {
    if m == 0 || cols.is_empty() {
        return;
    }
    assert!(k > 0, "a packed B has steps");
    assert!(cols.end <= n, "columns inside B");
    let first = cols.start;
    let block_end = (first / NC + 1) * NC;
    assert!(
        first.is_multiple_of(NR) && (first.is_multiple_of(NC) || cols.end <= block_end),
        "columns of a packed B start on a panel and stay in their block"
    );
    let tiles = if streamed { &STREAMED } else { &CACHED };
    SCRATCH.with(|scratch| {
        let scratch = &mut *scratch.borrow_mut();
        let packed_a = reserve(&mut scratch.a, KC * MR);
        // SAFETY: the caller's promises; every block lies where
        // pack_whole_b put it, and local column jc of `cols` is global
        // column first + jc, in the panel (first + jc - block) / NR of the
        // block that starts at column `block` (checked above: the local
        // blocks never straddle two of pack_whole_b's).
        unsafe {
            blocks(
                m,
                k,
                cols.len(),
                (a, rsa, csa),
                beta,
                (c.add(first), rsc),
                (packed_a, lines(&mut scratch.lines)),
                tiles,
                |pc, kc, jc, _| {
                    let column = first + jc;
                    let block = column / NC * NC;
                    let panel = (column - block) * kc;
                    BBlock::Packed(packed.add(packed_block_at(k, n, pc, block) + panel))
                },
            )
        }
    });
}

/// Ranges of columns of a `n`-column B packed by [`pack_whole_b`], about
/// `width` columns each, that [`sgemm_packed_b`] can compute one by one:
/// whole panels inside one block, so that a B of fewer columns than a
/// block (a 1000-unit dense layer) still splits over threads, down to one
/// panel per range.
pub(crate) fn column_ranges(n: usize, width: usize) -> Vec<Range<usize>> {
    let width = width.clamp(NR, NC).next_multiple_of(NR);
    (0..n)
        .step_by(NC)
        .flat_map(|block| {
            let end = (block + NC).min(n);
            (block..end)
                .step_by(width)
                .map(move |first| first..(first + width).min(end))
        })
        .collect()
}

/// Whether an A of strides `rsa`, `csa` is read by columns where it lies
/// for a C of `n` columns (see [`COLUMNS_UP_TO`]).
fn reads_columns_in_place(rsa: isize, csa: isize, n: usize) -> bool {
    rsa == 1 && csa != 1 && n <= COLUMNS_UP_TO
}

/// Rows of C up to which a B stored by rows is read where it lies (with
/// an A read by columns in place): each value then serves at most five
/// panels of A, too few to pay for a copy (Winograd's kernel-gradient
/// products, `Vᵀ · Z`, a row of C per channel).
const B_IN_PLACE_UP_TO: usize = 64;

/// Columns of C up to which an A stored by columns is read where it lies
/// rather than packed: its panel then serves a tile or two, too few to
/// pay for a copy (Winograd's kernel-gradient products, `Vᵀ · Z` with a
/// column per filter: cifar10-cnn's backward pass 30.0 -> 29.0 ms on one
/// core). A panel that serves many tiles is packed: read in place, the
/// dense kernel gradient `xᵀ · dy` of that model, 16 tiles a panel, took
/// 4.0 -> 4.2 ms.
const COLUMNS_UP_TO: usize = 2 * NR;

/// The loops of [`sgemm`] (see the module's notes), with `block_of(pc,
/// kc, jc, nc)` giving the packed panels of each `kc x nc` block of B.
///
/// # Safety
/// As for [`sgemm`]; `packed_a` holds a panel of `MR x KC` values and
/// `block_of` returns 64-byte aligned panels of the block it is asked for.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn blocks(
    m: usize,
    k: usize,
    n: usize,
    (a, rsa, csa): (*const f32, isize, isize),
    beta: f32,
    (c, rsc): (*mut f32, isize),
    (packed_a, prefetch_lines): (*mut f32, &mut [usize; MAX_LINES]),
    tiles: &Tiles,
    mut block_of: impl FnMut(usize, usize, usize, usize) -> BBlock,
) {
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            // The first block overwrites C when beta is 0; every later
            // block adds its sum to C.
            let accumulate = pc > 0 || beta != 0.0;
            let packed_b = block_of(pc, kc, jc, nc);
            for ir in (0..m).step_by(MR) {
                let rows = MR.min(m - ir);
                let a_panel = at(a, ir, rsa, pc, csa);
                let (tile, a_panel, stride) = if csa == 1 {
                    (tiles.rows[rows - 1], a_panel, rsa)
                } else if reads_columns_in_place(rsa, csa, n) {
                    let columns = match packed_b {
                        BBlock::Packed(_) => &tiles.columns,
                        BBlock::InPlace(..) => &tiles.columns_b_in_place,
                    };
                    (columns[rows - 1], a_panel, csa)
                } else {
                    // SAFETY: A[ir..ir + rows, pc..pc + kc] is readable
                    // (the caller's promise) and the buffer holds a panel.
                    unsafe { pack_a(rows, kc, a_panel, rsa, csa, packed_a) };
                    (tiles.panel[rows - 1], packed_a.cast_const(), 0)
                };
                // While the tiles of this panel run, the next panel's
                // part of A comes into the cache, a share per tile.
                let next_rows = MR.min(m - ir - rows);
                let next = at(a, ir + rows, rsa, pc, csa);
                let lines = lines_of(next, next_rows, kc, rsa, csa, prefetch_lines);
                let tiles = nc.div_ceil(NR);
                for (t, jr) in (0..nc).step_by(NR).enumerate() {
                    let cols = NR.min(nc - jr);
                    let c_tile = CTile {
                        c: c.wrapping_offset(ir as isize * rsc + (jc + jr) as isize),
                        rsc,
                        mask: if cols == NR { !0 } else { (1 << cols) - 1 },
                        accumulate,
                    };
                    let share = &prefetch_lines[lines * t / tiles..lines * (t + 1) / tiles];
                    let (b, rsb) = match packed_b {
                        BBlock::Packed(panels) => (panels.wrapping_add(jr * kc), NR as isize),
                        BBlock::InPlace(b, rsb) => (b.wrapping_add(jr), rsb),
                    };
                    // SAFETY: the CPU has AVX-512F (the caller's
                    // promise); the panels hold kc steps (a packed B
                    // panel is 64-byte aligned: kc * NR values per
                    // panel; B in place holds the tile's columns of kc
                    // rows, the caller's promise); C's tile lies inside C.
                    unsafe { tile(kc, a_panel, stride, b, rsb, c_tile, share) };
                }
            }
        }
    }
}

/// The most cache lines [`lines_of`] lists: `MR` runs of `KC` values
/// take at most `KC / 16 + 1` lines each.
const MAX_LINES: usize = MR * (KC / 16 + 1);

/// Lists in `lines` the addresses of the cache lines that hold the
/// `rows x kc` block of A at `a` (row stride `rsa`, column stride `csa`)
/// when A is row-major (`csa` 1); returns how many. An A read transposed
/// gets none: it is packed panel by panel, whose constant stride the
/// hardware follows, and listing its `kc` short runs cost more than it
/// saved (Winograd's kernel-gradient products, `Vᵀ · Z` over 64 tiles:
/// cifar10-cnn's backward pass 61 -> 56 ms on one core; `gemm_bench`'s
/// transposed-A products unchanged).
fn lines_of(
    a: *const f32,
    rows: usize,
    kc: usize,
    rsa: isize,
    csa: isize,
    lines: &mut [usize; MAX_LINES],
) -> usize {
    if csa != 1 {
        return 0;
    }
    // The block as `rows` contiguous runs of `kc` values `rsa` apart.
    let (runs, len, stride) = (rows, kc, rsa);
    // A contiguous block (or none) is left to the hardware prefetcher.
    if len == 0 || runs == 0 || stride.unsigned_abs() == len {
        return 0;
    }
    let mut count = 0;
    for run in 0..runs {
        let first = a.wrapping_offset(run as isize * stride) as usize;
        let last = first + 4 * (len - 1);
        let mut line = first & !63;
        while line <= last && count < MAX_LINES {
            lines[count] = line;
            count += 1;
            line += 64;
        }
    }
    count
}

/// The address of element `(i, j)` of the matrix at `x` with strides
/// `rs`, `cs` (wrapping: only dereferenced where it lies inside).
fn at(x: *const f32, i: usize, rs: isize, j: usize, cs: isize) -> *const f32 {
    x.wrapping_offset(i as isize * rs + j as isize * cs)
}

/// Packs the `kc x nc` block of B at `b` into panels of [`NR`] columns:
/// panel `q` (columns `q * NR..`) at `dst + q * NR * kc`, step `p` of it
/// at `+ p * NR`. Columns past `nc` in the last panel are zeros.
///
/// # Safety
/// The CPU must have AVX-512F; the block must be readable and `dst` must
/// hold `kc * nc.next_multiple_of(NR)` values.
unsafe fn pack_b(kc: usize, nc: usize, b: *const f32, rsb: isize, csb: isize, dst: *mut f32) {
    if csb == 1 {
        // Row-major B: each row is contiguous.
        // SAFETY: the CPU has AVX-512F, the block is readable and dst
        // holds its panels (the caller's promises).
        unsafe { avx512::pack_b_rows(kc, nc, b, rsb, dst) };
        return;
    }
    for jr in (0..nc).step_by(NR) {
        let cols = NR.min(nc - jr);
        // SAFETY: the panel lies inside dst (the caller's promise).
        let panel = unsafe { std::slice::from_raw_parts_mut(dst.add(jr * kc), kc * NR) };
        let src = at(b, 0, rsb, jr, csb);
        if rsb == 1 && csb != 1 {
            // B read transposed: its columns are contiguous.
            for j in 0..cols {
                for p in 0..kc {
                    // SAFETY: B[p, jr + j] is inside the block.
                    panel[p * NR + j] = unsafe { *src.offset(j as isize * csb + p as isize) };
                }
            }
        } else {
            for (p, step) in panel.chunks_exact_mut(NR).enumerate() {
                let row = src.wrapping_offset(p as isize * rsb);
                for (j, v) in step[..cols].iter_mut().enumerate() {
                    // SAFETY: B[p, jr + j] is inside the block.
                    *v = unsafe { *row.offset(j as isize * csb) };
                }
            }
        }
        if cols < NR {
            for step in panel.chunks_exact_mut(NR) {
                step[cols..].fill(0.0);
            }
        }
    }
}

/// Packs the `rows x kc` block of A at `a` (`rows <= MR`) into a panel:
/// step `p` holds `A[0..rows, p]` at `dst + p * MR`. Values past `rows`
/// are not read by the micro-kernel for `rows` rows. (A row-major A is
/// not packed: the micro-kernel reads it where it lies.)
///
/// # Safety
/// The CPU must have AVX-512F; the block must be readable and `dst` must
/// hold `MR * kc` values.
unsafe fn pack_a(rows: usize, kc: usize, a: *const f32, rsa: isize, csa: isize, dst: *mut f32) {
    if rsa == 1 {
        // A read transposed: its columns are contiguous.
        // SAFETY: the caller's promises.
        unsafe { avx512::pack_a_columns(rows, kc, a, csa, dst) };
        return;
    }
    // SAFETY: the panel lies inside dst (the caller's promise).
    let panel = unsafe { std::slice::from_raw_parts_mut(dst, kc * MR) };
    for (p, step) in panel.chunks_exact_mut(MR).enumerate() {
        let column = a.wrapping_offset(p as isize * csa);
        for (i, v) in step[..rows].iter_mut().enumerate() {
            // SAFETY: A[i, p] is inside the block.
            *v = unsafe { *column.offset(i as isize * rsa) };
        }
    }
}

#[cfg(test)]
mod tests;
