// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import "./Accounts.sol";
import "./Deployments.sol";
import "./Disputes.sol";
import "./Failover.sol";
import "./Machines.sol";
import "./Offers.sol";
import "./Orders.sol";

/// The Cloister contracts on an EVM chain, mirroring cloister.ledger.contracts one to one. The state lives
/// here; the transactions run in the linked libraries (which keeps each under the 24 KiB code limit). Every
/// transaction takes the sender's Cloister nonce first; those that create a record take the Cloister
/// transaction hash, whose first 8 bytes are the record's id.
contract Cloister {
    string public chainName;
    bytes32 public genesisHash;
    uint64 public genesisTime;
    State internal s;

    constructor(
        string memory chainName_,
        bytes32 genesisHash_,
        uint64 genesisTime_,
        Params memory params_,
        address registrar_
    ) {
        chainName = chainName_;
        genesisHash = genesisHash_;
        genesisTime = genesisTime_;
        s.params = params_;
        s.registrar = registrar_;
    }

    // --- transactions --------------------------------------------------------------------------------------

    function registerAccount(
        uint64 nonce,
        bytes32 signingKey,
        bytes32 sealingKey,
        string calldata name,
        bytes calldata binding
    ) external {
        Accounts.registerAccount(s, nonce, signingKey, sealingKey, name, binding);
    }

    function faucetDrip(uint64 nonce, uint64 amount) external {
        Accounts.faucetDrip(s, nonce, amount);
    }

    function transfer(uint64 nonce, bytes20 to, uint64 amount) external {
        Accounts.transfer(s, nonce, to, amount);
    }

    function registerProvider(uint64 nonce, string calldata name, string calldata description) external {
        Accounts.registerProvider(s, nonce, name, description);
    }

    function depositStake(uint64 nonce, uint64 amount) external {
        Accounts.depositStake(s, nonce, amount);
    }

    function withdrawStake(uint64 nonce, uint64 amount) external {
        Accounts.withdrawStake(s, nonce, amount);
    }

    function challengeMachine(uint64 nonce, bytes32 txHash) external {
        Machines.challengeMachine(s, nonce, txHash);
    }

    function registerMachine(
        uint64 nonce,
        bytes32 txHash,
        MachineInput calldata input,
        bytes calldata registrarSignature
    ) external {
        Machines.registerMachine(s, nonce, txHash, input, registrarSignature);
    }

    function heartbeat(uint64 nonce, bytes8 machineId) external {
        Machines.heartbeat(s, nonce, machineId);
    }

    function retireMachine(uint64 nonce, bytes8 machineId) external {
        Machines.retireMachine(s, nonce, machineId);
    }

    function createOffer(uint64 nonce, bytes32 txHash, OfferInput calldata input) external {
        Offers.createOffer(s, nonce, txHash, input);
    }

    function retireOffer(uint64 nonce, bytes8 offerId) external {
        Offers.retireOffer(s, nonce, offerId);
    }

    function createOrder(uint64 nonce, bytes32 txHash, OrderInput calldata input) external {
        Orders.createOrder(s, nonce, txHash, input);
    }

    function postGrant(uint64 nonce, bytes8 orderId, bytes8 offerId, bytes8 machineId, bytes calldata sealedKey)
        external
    {
        Orders.postGrant(s, nonce, orderId, offerId, machineId, sealedKey);
    }

    function refuseGrant(uint64 nonce, bytes8 orderId, bytes8 offerId, bytes8 machineId, string calldata reason)
        external
    {
        Orders.refuseGrant(s, nonce, orderId, offerId, machineId, reason);
    }

    function startOrder(uint64 nonce, bytes8 orderId, bytes8 machineId) external {
        Orders.startOrder(s, nonce, orderId, machineId);
    }

    function completeOrder(
        uint64 nonce,
        bytes8 orderId,
        bytes8 machineId,
        uint64 usageSeconds,
        bytes32 report,
        bytes32 manifest,
        string calldata deliveryUri
    ) external {
        Orders.completeOrder(s, nonce, orderId, machineId, usageSeconds, report, manifest, deliveryUri);
    }

    function recordCheckpoint(
        uint64 nonce,
        bytes8 orderId,
        bytes8 machineId,
        uint64 step,
        uint64 usageSeconds,
        bytes32 digest,
        string calldata noticeUri
    ) external {
        Failover.recordCheckpoint(s, nonce, orderId, machineId, step, usageSeconds, digest, noticeUri);
    }

    function postResumeGrant(uint64 nonce, bytes8 orderId, bytes8 machineId, bytes calldata sealedKey) external {
        Failover.postResumeGrant(s, nonce, orderId, machineId, sealedKey);
    }

    function reassignOrder(uint64 nonce, bytes8 orderId, bytes8 machineId) external {
        Failover.reassignOrder(s, nonce, orderId, machineId);
    }

    function failOrder(
        uint64 nonce,
        bytes8 orderId,
        bytes8 machineId,
        string calldata reason,
        string calldata deliveryUri
    ) external {
        Orders.failOrder(s, nonce, orderId, machineId, reason, deliveryUri);
    }

    function cancelOrder(uint64 nonce, bytes8 orderId) external {
        Orders.cancelOrder(s, nonce, orderId);
    }

    function registerEndpoint(
        uint64 nonce,
        bytes8 orderId,
        bytes8 machineId,
        string calldata url,
        bytes32 deploymentKey,
        bytes calldata keySignature,
        bytes calldata registrarSignature
    ) external {
        Deployments.registerEndpoint(
            s, nonce, orderId, machineId, url, deploymentKey, keySignature, registrarSignature
        );
    }

    function stopDeployment(uint64 nonce, bytes8 orderId) external {
        Deployments.stopDeployment(s, nonce, orderId);
    }

    function depositCredit(uint64 nonce, bytes8 orderId, uint64 amount) external {
        Deployments.depositCredit(s, nonce, orderId, amount);
    }

    function withdrawCredit(uint64 nonce, bytes8 orderId, uint64 amount) external {
        Deployments.withdrawCredit(s, nonce, orderId, amount);
    }

    function settleUsage(uint64 nonce, bytes8 orderId, bytes20 user, uint64 tokens, bytes32 receipts) external {
        Deployments.settleUsage(s, nonce, orderId, user, tokens, receipts);
    }

    function openDispute(
        uint64 nonce,
        bytes32 txHash,
        DisputeInput calldata input,
        bytes calldata registrarSignature
    ) external {
        Disputes.openDispute(s, nonce, txHash, input, registrarSignature);
    }

    function reportTimeout(uint64 nonce, bytes8 orderId, bytes8 machineId, bytes32 requestDigest) external {
        Disputes.reportTimeout(s, nonce, orderId, machineId, requestDigest);
    }

    // --- reads ---------------------------------------------------------------------------------------------

    function contractParams() external view returns (Params memory) {
        return s.params;
    }

    function registrar() external view returns (address) {
        return s.registrar;
    }

    function eventCount() external view returns (uint64) {
        return s.eventCount;
    }

    function accountOfEth(address eth) external view returns (bytes20) {
        return s.accountOf[eth];
    }

    function getAccount(bytes20 cl) external view returns (Account memory) {
        return Base.account(s, cl);
    }

    function getProvider(bytes20 cl) external view returns (Provider memory provider) {
        provider = s.providers[cl];
        if (!provider.exists) revert ProviderNotFound(cl);
    }

    function getChallenge(bytes20 provider) external view returns (Challenge memory) {
        return s.challenges[provider];
    }

    function getMachine(bytes8 id) external view returns (Machine memory) {
        return Base.machine(s, id);
    }

    function getMachines() external view returns (Machine[] memory found) {
        found = new Machine[](s.machineIds.length);
        for (uint256 i = 0; i < found.length; i++) {
            found[i] = s.machines[s.machineIds[i]];
        }
    }

    function getOffer(bytes8 id) external view returns (Offer memory) {
        return Base.offer(s, id);
    }

    function getOffers() external view returns (Offer[] memory found) {
        found = new Offer[](s.offerIds.length);
        for (uint256 i = 0; i < found.length; i++) {
            found[i] = s.offers[s.offerIds[i]];
        }
    }

    function getOrder(bytes8 id) external view returns (Order memory) {
        return Base.order(s, id);
    }

    function getOrders() external view returns (Order[] memory found) {
        found = new Order[](s.orderIds.length);
        for (uint256 i = 0; i < found.length; i++) {
            found[i] = s.orders[s.orderIds[i]];
        }
    }

    function getGrants(bytes8 orderId) external view returns (Grant[] memory) {
        Base.order(s, orderId);
        return s.grants[orderId];
    }

    function getRefusals(bytes8 orderId) external view returns (KeyRefusal[] memory) {
        Base.order(s, orderId);
        return s.refusals[orderId];
    }

    function getCheckpoints(bytes8 orderId) external view returns (Checkpoint[] memory) {
        Base.order(s, orderId);
        return s.checkpoints[orderId];
    }

    function getResumeGrants(bytes8 orderId) external view returns (ResumeGrant[] memory) {
        Base.order(s, orderId);
        return s.resumeGrants[orderId];
    }

    function getEndpoints(bytes8 orderId) external view returns (Endpoint[] memory) {
        Base.order(s, orderId);
        return s.endpoints[orderId];
    }

    function getCredit(bytes8 orderId, bytes20 user) external view returns (Credit memory) {
        Base.order(s, orderId);
        return s.credits[keccak256(abi.encode(orderId, user))];
    }

    function getDisputes(bytes8 orderId) external view returns (Dispute[] memory) {
        Base.order(s, orderId);
        return s.disputes[orderId];
    }

    function getTimeouts(bytes8 orderId) external view returns (Timeout[] memory) {
        Base.order(s, orderId);
        return s.timeouts[orderId];
    }
}
