//! `tally psp-sim`: fake PSP servers to test the payments API against (issue 17 §6). They are test peers speaking the
//! PSPs' wire formats, not mocks of Tally's own parts.

pub mod adyen;
pub mod stripe;
