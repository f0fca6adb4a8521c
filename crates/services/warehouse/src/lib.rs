//! The warehouse side of Tally (DESIGN §11). So far: reference data — the merchant dimension (SCD2) and the ECB's
//! FX rates — loaded into PostgreSQL as versions named by their content hash ([`reference`]), which the warehouse
//! sink's enrichment will read and name on every row (I5).

pub mod reference;
