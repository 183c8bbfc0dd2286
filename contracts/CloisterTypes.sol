// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

// The records of cloister.ledger.records, as stored on chain. Accounts are keyed by their Cloister address
// (20 bytes, derived from the Ed25519 signing key) and act through the Ethereum address bound at registration.
// Ids are the 8 bytes that follow "mc-", "of-", "or-" and "dp-". Times are block timestamps (seconds). An empty
// string, a zero digest and NONE stand for a JSON null.

enum OfferKind {
    Model,
    Dataset,
    Engine,
    Compute
}

enum PricingModel {
    Free,
    PerHour,
    Fixed,
    RevenueShare
}

enum OrderKind {
    Finetune,
    Inference
}

enum OrderState {
    PendingGrants,
    Ready,
    Running,
    Completed,
    Failed,
    Cancelled
}

struct Params {
    uint64 faucetLimit;
    uint64 heartbeatTimeout;
    uint64 minProviderStake;
    uint64 challengeTtl;
    uint64 minServingStake;
    uint64 maxReplicas;
    uint64 disputeSlashBps;
    uint64 refereeShareBps;
    uint64 timeoutSlashBps;
}

struct Account {
    address eth;
    uint64 balance;
    uint64 stake;
    uint64 nonce;
    bytes32 signingKey;
    bytes32 sealingKey;
    string name;
    bytes binding;
}

struct Provider {
    bool exists;
    string name;
    string description;
}

struct Specs {
    uint32 cpuCores;
    uint32 memoryGib;
    uint64 diskGib;
    string[] gpus;
}

struct Machine {
    bytes8 id;
    bytes20 provider;
    bool active;
    uint64 registeredAt;
    uint64 lastHeartbeat;
    bytes32 loaderSigningKey;
    bytes32 loaderSealingKey;
    string platform;
    string region;
    Specs specs;
    bytes tcbEvidence;
    bytes32 attestationDigest;
    uint8 verdict; // 0 trusted, 1 simulated
}

/// A provider's outstanding attestation challenge: the nonce its next registration's TCB must answer.
struct Challenge {
    bool exists;
    bool used;
    uint64 issuedAt;
    bytes32 nonce;
}

struct Pricing {
    PricingModel model;
    uint64 amount;
    uint16 shareBps;
}

struct Restrictions {
    string[] platforms;
    string[] regions;
    bytes32[] engineDigests;
    uint64 maxLeaseHours; // 0: no limit
}

struct Offer {
    bytes8 id;
    bytes20 owner;
    OfferKind kind;
    bool active;
    uint64 createdAt;
    uint64 size; // content offers only
    bytes32 contentDigest; // content offers only
    string name;
    string description;
    string blobUri; // content offers only
    Pricing pricing;
    Restrictions restrictions;
    bytes8[] machineIds; // compute offers only
}

struct OfferInput {
    OfferKind kind;
    string name;
    string description;
    bytes32 contentDigest;
    string blobUri;
    uint64 size;
    Pricing pricing;
    Restrictions restrictions;
    bytes8[] machineIds;
}

struct Order {
    bytes8 id;
    bytes20 owner;
    OrderKind kind;
    OrderState state;
    bytes8 modelOffer;
    bytes8 engineOffer;
    bytes8 computeOffer;
    uint32 leaseHours;
    uint32 replicas;
    uint64 deposit;
    uint64 escrow;
    uint64 createdAt;
    uint64 startedAt; // NONE until started
    uint64 endedAt; // NONE until ended
    uint64 usageSeconds;
    bytes32 reportDigest; // set when completed
    bytes8[] datasetOffers;
    bytes8[] machines;
    bytes params; // canonical JSON of the hyper-parameters
    string failureReason; // set when failed
    bytes8[] adapterOffers; // inference only
    bytes32 manifestDigest; // set when completed, if the run wrote a manifest
    string deliveryUri; // set when completed, and when failed if the machine delivered a report
    bytes20 gateway; // inference: params.gateway, the account that settles usage and opens disputes
    uint64 pricePer1kTokens; // inference: params.price_per_1k_tokens
}

struct OrderInput {
    OrderKind kind;
    bytes8 modelOffer;
    bytes8[] datasetOffers;
    bytes8 engineOffer;
    bool hasComputeOffer;
    bytes8 computeOffer;
    bytes params;
    uint32 leaseHours;
    uint32 replicas;
    uint64 deposit;
    bytes8[] adapterOffers;
    bytes20 gateway; // inference: what params.gateway says (readers check they agree)
    uint64 pricePer1kTokens; // inference: what params.price_per_1k_tokens says
}

struct Grant {
    bytes8 offerId;
    bytes8 machineId;
    bytes20 owner;
    uint64 createdAt;
    bytes sealedKey;
}

/// A content owner's refusal to release its key to one assigned machine (records.Refusal).
struct KeyRefusal {
    bytes8 offerId;
    bytes8 machineId;
    bytes20 owner;
    uint64 createdAt;
    string reason;
}

/// An order's progress on one machine (records.Checkpoint); a zero digest is none. Released once the order
/// moved off the machine, with the usage share it is paid for. An inference order's machines each hold one
/// from their assignment (a seat, step 0), with the compute offer they were drawn under.
struct Checkpoint {
    bytes8 machineId;
    bytes8 computeOffer;
    uint64 step;
    uint64 usageSeconds;
    bytes32 digest;
    bool released;
    uint64 updatedAt;
    string noticeUri;
}

/// The owner's key to a fine-tune's latest released checkpoint, sealed to a replacement machine (ResumeGrant).
struct ResumeGrant {
    bytes8 machineId;
    bytes32 checkpointDigest;
    bytes sealedKey;
    uint64 createdAt;
}

/// Where one replica of a deployment serves, with the deployment key its loader signed (records.Endpoint).
struct Endpoint {
    bytes8 machineId;
    string url;
    bytes32 deploymentKey;
    bytes keySignature;
    uint64 registeredAt;
    uint64 removedAt; // NONE while serving
}

/// What one end user prepaid for one deployment (records.Credit).
struct Credit {
    uint64 balance;
    uint64 spent;
    uint64 updatedAt;
}

/// A judged disagreement between replicas over one request (records.Dispute); a zero output digest is none.
struct Dispute {
    bytes8 id;
    bytes32 requestDigest;
    bytes[] commitments;
    bytes32 outputDigest;
    bytes8[] slashed;
    bytes8[] rewarded;
    uint64 slashedAmount;
    bytes20 openedBy;
    uint64 createdAt;
}

/// A replica that did not commit to a request in time, and what its provider lost (records.Timeout).
struct Timeout {
    bytes8 machineId;
    bytes32 requestDigest;
    uint64 amount;
    uint64 createdAt;
}

/// A dispute as the registrar judged it off chain (cloister.consensus): the signed commitments it checked
/// against the machines' loader keys, and the verdict (machines sorted by id; referees: the majority's
/// machines that committed as referee).
struct DisputeInput {
    bytes8 orderId;
    bytes32 requestDigest;
    bytes[] commitments;
    bytes32 outputDigest;
    bytes8[] majority;
    bytes8[] referees;
    bytes8[] dissenters;
}

// Why a machine was not eligible for an order (cloister.ledger.contracts.assignment).
enum Refusal {
    Retired,
    Silent,
    Busy,
    LowStake,
    LowServingStake,
    Platform,
    Region,
    NotOffered
}

struct Refused {
    Refusal reason;
    bytes8 offerId; // for Platform and Region
}

/// A registration as the attestation registrar appraised it: the declared region, the TCB, and what the
/// appraisal read from the TCB (platform, specs, loader keys) and concluded (result digest, verdict).
struct MachineInput {
    string region;
    bytes tcbEvidence;
    string platform;
    uint32 cpuCores;
    uint32 memoryGib;
    uint64 diskGib;
    string[] gpus;
    bytes32 loaderSigningKey;
    bytes32 loaderSealingKey;
    bytes32 attestationDigest;
    uint8 verdict;
}

/// Eligible machines and the compute offer each would run under, in machine id order.
struct Candidates {
    bytes8[] machineIds;
    bytes8[] offerIds;
    uint256 count;
}

/// Everything the contract stores, in one struct so that the libraries that hold the logic can share it.
struct State {
    Params params;
    address registrar; // the key that co-signs every appraised machine registration
    uint64 eventCount;
    mapping(bytes20 => Account) accounts;
    mapping(address => bytes20) accountOf;
    mapping(bytes20 => Provider) providers;
    mapping(bytes8 => Machine) machines;
    mapping(bytes20 => Challenge) challenges;
    bytes8[] machineIds;
    mapping(bytes8 => uint256) busy; // open orders per machine
    mapping(bytes8 => Offer) offers;
    bytes8[] offerIds;
    mapping(bytes8 => Order) orders;
    bytes8[] orderIds;
    mapping(bytes8 => Grant[]) grants;
    mapping(bytes32 => bool) granted;
    mapping(bytes8 => KeyRefusal[]) refusals;
    mapping(bytes32 => bool) refused;
    mapping(bytes8 => Checkpoint[]) checkpoints;
    mapping(bytes32 => uint256) checkpointSlot; // keccak(order, machine) => index + 1
    mapping(bytes8 => ResumeGrant[]) resumeGrants;
    mapping(bytes32 => bool) resumed; // keccak(order, machine)
    mapping(bytes8 => Endpoint[]) endpoints;
    mapping(bytes32 => uint256) endpointSlot; // keccak(order, machine) => index + 1
    mapping(bytes8 => bytes32) deploymentKeys; // the first endpoint's key, every replica's
    mapping(bytes32 => Credit) credits; // keccak(order, user)
    mapping(bytes8 => Dispute[]) disputes;
    mapping(bytes32 => bool) disputed; // keccak(order, request digest)
    mapping(bytes8 => bool) disputeIds;
    mapping(bytes8 => Timeout[]) timeouts;
    mapping(bytes32 => bool) timedOut; // keccak(order, machine, request digest)
}

// --- limits (cloister.ledger.records) and codes the rejections use (mirrored in reverts.py) ---

uint64 constant MAX_AMOUNT = type(uint64).max >> 1;
uint64 constant NONE = type(uint64).max;
uint256 constant MAX_NAME = 128;
uint256 constant MAX_TEXT = 4096;
uint256 constant MAX_URI = 2048;
uint256 constant MAX_ITEMS = 64;
uint256 constant MAX_TCB_EVIDENCE = 256 * 1024;
uint256 constant MAX_SEALED_KEY = 4 * 1024;
uint256 constant MAX_REASON = 512;
uint256 constant MAX_PARAMS = 16 * 1024;
uint256 constant MAX_LEASE_HOURS = 24 * 366;
uint16 constant MAX_SHARE_BPS = 10_000;
uint8 constant FOR_TRANSFER = 0;
uint8 constant FOR_STAKE = 1;
uint8 constant FOR_DEPOSIT = 2;
uint8 constant TO_RETIRE = 0;
uint8 constant TO_GRANT = 1;
uint8 constant TO_REPORT = 2;
uint8 constant WHEN_GRANTING = 0;
uint8 constant WHEN_STARTING = 1;
uint8 constant WHEN_COMPLETING = 2;
uint8 constant WHEN_FAILING = 3;
uint8 constant WHEN_CANCELLING = 4;
uint8 constant WHEN_CHECKPOINTING = 5;
uint8 constant WHEN_REASSIGNING = 6;
uint8 constant WHEN_GRANTING_DEPLOYMENT = 7;
uint8 constant WHEN_SERVING = 8;
uint8 constant WHEN_WITHDRAWING = 9;
uint8 constant WHEN_RESUMING = 10;
uint8 constant WHEN_STOPPING = 11;
uint8 constant WHEN_CREDITING = 12;
uint8 constant FOR_CREDIT = 3;
uint8 constant TO_CANCEL = 0;
uint8 constant TO_STOP = 1;
uint8 constant TO_RESUME = 2;
uint256 constant MAX_ADAPTERS = 8;
uint256 constant MAX_COMMITMENT = 4096;
uint256 constant MAX_REPLICAS = 64;

// --- rejections: each maps to one cloister.errors class (cloister/ledger/evm/reverts.py) ---

error SenderNotRegistered(address eth);
error NonceMismatch(uint64 expected, uint64 got);
error BadField(string field);
error AccountNotFound(bytes20 account);
error ProviderNotFound(bytes20 account);
error MachineNotFound(bytes8 machineId);
error OfferNotFound(bytes8 offerId);
error OrderNotFound(bytes8 orderId);
error AccountExists(bytes20 account);
error EthAddressTaken(address eth);
error ProviderExists(bytes20 account);
error IdTaken(bytes8 id);
error GrantExists(bytes8 offerId, bytes8 machineId);
error RefusalExists(bytes8 offerId, bytes8 machineId);
error AlreadyGranted(bytes8 offerId, bytes8 machineId);
error BalanceTooLow(uint8 purpose, bytes20 account, uint256 needed, uint256 balance);
error StakeTooLow(bytes20 account, uint256 needed, uint256 stake);
error DepositTooLow(uint256 deposit, uint256 required);
error BalanceOverflow(bytes20 account, uint256 amount);
error FaucetDisabled();
error FaucetLimit(uint64 limit);
error NotProvider(bytes20 account);
error NotMachineProvider(bytes8 machineId, bytes20 provider);
error NotOfferOwner(uint8 action, bytes8 offerId, bytes20 owner);
error NotOrderOwner(uint8 action, bytes8 orderId, bytes20 owner);
error OfferNotInOrder(bytes8 offerId, bytes8 orderId);
error MachineNotAssigned(uint8 action, bytes8 machineId, bytes8 orderId);
error MachineRetired(bytes8 machineId);
error MachineWorking(bytes8 machineId, bytes8[] orderIds);
error OfferRetired(OfferKind kind, bytes8 offerId);
error OfferAlreadyRetired(bytes8 offerId);
error WrongOfferKind(bytes8 offerId, OfferKind actual, OfferKind expected);
error WrongOrderState(bytes8 orderId, OrderState state, uint8 action);
error EngineNotAllowed(OfferKind kind, bytes8 offerId, bytes32 engineDigest);
error LeaseTooLong(OfferKind kind, bytes8 offerId, uint64 maxLeaseHours, uint64 leaseHours);
error NoChallenge(bool used);
error ChallengeExpired(uint64 age, uint64 ttl);
error RegistrarSignatureInvalid();
error CheckpointBehind(bytes8 machineId, uint64 step, uint64 usageSeconds);
error MachineAlive(bytes8 machineId, uint64 lastHeartbeat, uint64 timeout);
error NoEligibleMachine(uint256 picked, uint256 needed, Refused[] refusals);
error WrongOrderKind(bytes8 orderId, OrderKind kind);
error TooManyReplicas(uint256 replicas, uint256 maxReplicas);
error SharesTooHigh(uint256 shareBps);
error GrantsMissing(bytes8 orderId, bytes8 machineId);
error DeploymentKeyMismatch(bytes8 orderId, bytes8 machineId, bytes32 deploymentKey);
error NotGateway(bytes8 orderId, bytes20 gateway);
error NoSeat(bytes8 machineId, bytes8 orderId);
error CreditTooLow(bytes8 orderId, bytes20 user, uint256 needed, uint256 balance);
error CreditOverflow(bytes8 orderId, bytes20 user);
error DisputeExists(bytes8 orderId, bytes32 requestDigest);
error TimeoutExists(bytes8 orderId, bytes8 machineId, bytes32 requestDigest);
error ResumeGrantExists(bytes8 orderId, bytes8 machineId);
error NoReleasedCheckpoint(bytes8 orderId);
error StakeServing(bytes20 account, uint256 stake, uint256 floor, bytes8[] orderIds);

// --- events: each carries seq, its position in the ledger's one event stream ---

event AccountRegistered(uint64 seq, bytes20 indexed account, string name);
event FaucetDripped(uint64 seq, bytes20 indexed to, uint64 amount);
event Transferred(uint64 seq, bytes20 indexed sender, bytes20 indexed to, uint64 amount);
event ProviderRegistered(uint64 seq, bytes20 indexed account, string name);
event StakeDeposited(uint64 seq, bytes20 indexed account, uint64 amount, uint64 stake);
event StakeWithdrawn(uint64 seq, bytes20 indexed account, uint64 amount, uint64 stake);
event MachineChallenged(uint64 seq, bytes20 indexed provider, bytes32 nonce, uint64 expiresAt);
event MachineRegistered(
    uint64 seq,
    bytes8 indexed machineId,
    bytes20 indexed provider,
    string platform,
    string region,
    bytes32 attestation,
    uint8 verdict
);
event MachineRetiredEvent(uint64 seq, bytes8 indexed machineId, bytes20 indexed provider);
event OfferCreated(uint64 seq, bytes8 indexed offerId, bytes20 indexed owner, OfferKind kind, bytes32 contentDigest);
event OfferRetiredEvent(uint64 seq, bytes8 indexed offerId, bytes20 indexed owner);
event OrderCreated(uint64 seq, bytes8 indexed orderId, bytes20 indexed owner, uint64 deposit, uint256 required);
event OrderAssigned(uint64 seq, bytes8 indexed orderId, bytes8[] machines, bytes8 computeOffer);
event GrantPosted(uint64 seq, bytes8 indexed orderId, bytes8 offerId, bytes8 machineId);
event GrantRefused(uint64 seq, bytes8 indexed orderId, bytes8 offerId, bytes8 machineId, string reason);
event OrderReady(uint64 seq, bytes8 indexed orderId, bytes8[] machines);
event OrderStarted(uint64 seq, bytes8 indexed orderId, bytes8 machineId);
event Payment(uint64 seq, bytes8 indexed orderId, bytes20 indexed to, uint64 amount, OfferKind kind, bytes8 offerId);
event Refund(uint64 seq, bytes8 indexed orderId, bytes20 indexed to, uint64 amount);
event OrderCompleted(
    uint64 seq,
    bytes8 indexed orderId,
    uint64 usageSeconds,
    bytes32 reportDigest,
    bytes32 manifestDigest,
    string deliveryUri
);
event OrderFailed(uint64 seq, bytes8 indexed orderId, bytes8 machineId, string reason, string deliveryUri);
event OrderCancelled(uint64 seq, bytes8 indexed orderId);
event OrderCheckpointed(
    uint64 seq,
    bytes8 indexed orderId,
    bytes8 machineId,
    uint64 step,
    uint64 usageSeconds,
    bytes32 digest,
    string noticeUri
);
event OrderReassigned(uint64 seq, bytes8 indexed orderId, bytes8 from, bytes8 to); // to is zero if none was left
event ResumeGranted(uint64 seq, bytes8 indexed orderId, bytes8 machineId, bytes32 checkpointDigest);
event EndpointRegistered(uint64 seq, bytes8 indexed orderId, bytes8 machineId, string url, bytes32 deploymentKey);
event DeploymentStopped(uint64 seq, bytes8 indexed orderId, uint64 servingSeconds);
event CreditDeposited(uint64 seq, bytes8 indexed orderId, bytes20 indexed user, uint64 amount, uint64 balance);
event CreditWithdrawn(uint64 seq, bytes8 indexed orderId, bytes20 indexed user, uint64 amount, uint64 balance);
event UsageSettled(
    uint64 seq,
    bytes8 indexed orderId,
    bytes20 indexed user,
    uint64 tokens,
    uint64 charge,
    bool capped,
    bytes32 receipts
);
event RevenueShared(uint64 seq, bytes8 indexed orderId, bytes20 indexed to, uint64 amount, bytes8 offerId);
event UsagePaid(uint64 seq, bytes8 indexed orderId, bytes20 indexed to, uint64 amount);
event DisputeOpened(
    uint64 seq,
    bytes8 indexed disputeId,
    bytes8 indexed orderId,
    bytes32 requestDigest,
    bytes32 outputDigest,
    bytes8[] slashed,
    bytes8[] rewarded,
    uint64 slashedAmount,
    uint64 burned
);
event DisputeRewarded(
    uint64 seq, bytes8 indexed orderId, bytes20 indexed to, uint64 amount, bytes8 disputeId, bytes8 machineId
);
// A zero dispute id: slashed for not committing to ``requestDigest`` in time.
event StakeSlashed(
    uint64 seq,
    bytes8 indexed machineId,
    bytes20 indexed provider,
    uint64 amount,
    bytes8 disputeId,
    bytes32 requestDigest
);
event ReplicaTimedOut(uint64 seq, bytes8 indexed orderId, bytes8 machineId, bytes32 requestDigest, uint64 amount);
