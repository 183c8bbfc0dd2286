// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import "./Assignment.sol";
import "./Settlement.sol";

/// Orders: creation with escrow and assignment, key grants, the run, and settlement or refund
/// (contracts/orders.py and contracts/assignment.py).
library Orders {
    /// Check every offer's terms, assign machines, escrow a deposit that covers the worst-case price.
    function createOrder(State storage s, uint64 nonce, bytes32 txHash, OrderInput calldata input) external {
        bytes20 sender = Base.begin(s, nonce);
        _checkOrder(input);
        bytes8 orderId = Base.newId(txHash);
        if (s.orders[orderId].owner != bytes20(0)) revert IdTaken(orderId);
        bytes8[] memory content = _contentOffers(s, input);
        if (input.hasComputeOffer) _offerOfKind(s, input.computeOffer, OfferKind.Compute);
        bytes32 engineDigest = s.offers[input.engineOffer].contentDigest;
        for (uint256 i = 0; i < content.length; i++) {
            _checkTerms(s.offers[content[i]], engineDigest, input.leaseHours);
        }
        if (input.hasComputeOffer) _checkTerms(s.offers[input.computeOffer], engineDigest, input.leaseHours);
        (bytes8[] memory picked, bytes8 chosen) = _assign(s, orderId, content, input, engineDigest);
        uint256 required = _deposit(s.offers[chosen].pricing, input.leaseHours, input.replicas);
        for (uint256 i = 0; i < content.length; i++) {
            required += _deposit(s.offers[content[i]].pricing, input.leaseHours, input.replicas);
        }
        if (input.deposit < required) revert DepositTooLow(input.deposit, required);
        Base.debit(s, sender, input.deposit, FOR_DEPOSIT);
        Order storage order = s.orders[orderId];
        order.id = orderId;
        order.owner = sender;
        order.kind = input.kind;
        order.state = OrderState.PendingGrants;
        order.modelOffer = input.modelOffer;
        order.engineOffer = input.engineOffer;
        order.computeOffer = chosen;
        order.leaseHours = input.leaseHours;
        order.replicas = input.replicas;
        order.deposit = input.deposit;
        order.escrow = input.deposit;
        order.createdAt = Base.time();
        order.startedAt = NONE;
        order.endedAt = NONE;
        order.datasetOffers = input.datasetOffers;
        order.machines = picked;
        order.params = input.params;
        s.orderIds.push(orderId);
        for (uint256 i = 0; i < picked.length; i++) {
            s.busy[picked[i]] += 1;
        }
        emit OrderCreated(Base.seq(s), orderId, sender, input.deposit, required);
        emit OrderAssigned(Base.seq(s), orderId, picked, chosen);
    }

    function postGrant(State storage s, uint64 nonce, bytes8 orderId, bytes8 offerId, bytes8 machineId, bytes calldata sealedKey)
        external
    {
        bytes20 sender = Base.begin(s, nonce);
        if (sealedKey.length == 0 || sealedKey.length > MAX_SEALED_KEY) revert BadField("sealed_key");
        Order storage order = Base.order(s, orderId);
        bytes32 key = _grantTarget(s, order, offerId, machineId, sender);
        if (s.granted[key]) revert GrantExists(offerId, machineId);
        s.granted[key] = true;
        s.grants[orderId].push(Grant(offerId, machineId, sender, Base.time(), sealedKey));
        emit GrantPosted(Base.seq(s), orderId, offerId, machineId);
        if (s.grants[orderId].length == (order.datasetOffers.length + 2) * order.machines.length) {
            order.state = OrderState.Ready;
            emit OrderReady(Base.seq(s), orderId, order.machines);
        }
    }

    /// Record the owner's refusal; the order keeps waiting (its owner may cancel for a full refund).
    function refuseGrant(State storage s, uint64 nonce, bytes8 orderId, bytes8 offerId, bytes8 machineId, string calldata reason)
        external
    {
        bytes20 sender = Base.begin(s, nonce);
        Base.text(reason, MAX_REASON, false, "reason");
        Order storage order = Base.order(s, orderId);
        bytes32 key = _grantTarget(s, order, offerId, machineId, sender);
        if (s.granted[key]) revert AlreadyGranted(offerId, machineId);
        if (s.refused[key]) revert RefusalExists(offerId, machineId);
        s.refused[key] = true;
        s.refusals[orderId].push(KeyRefusal(offerId, machineId, sender, Base.time(), reason));
        emit GrantRefused(Base.seq(s), orderId, offerId, machineId, reason);
    }

    function startOrder(State storage s, uint64 nonce, bytes8 orderId, bytes8 machineId) external {
        bytes20 sender = Base.begin(s, nonce);
        Order storage order = Base.order(s, orderId);
        _assignee(s, order, machineId, sender);
        _requireState(order, WHEN_STARTING);
        order.state = OrderState.Running;
        order.startedAt = Base.time();
        emit OrderStarted(Base.seq(s), orderId, machineId);
    }

    /// Settle: ``usageSeconds`` is the time on this (the final) machine, capped by what is left of the lease.
    function completeOrder(State storage s, uint64 nonce, bytes8 orderId, bytes8 machineId, uint64 usageSeconds, bytes32 report)
        external
    {
        bytes20 sender = Base.begin(s, nonce);
        if (usageSeconds > MAX_AMOUNT) revert BadField("usage_seconds");
        Order storage order = Base.order(s, orderId);
        _assignee(s, order, machineId, sender);
        _requireState(order, WHEN_COMPLETING);
        uint256 left = uint256(order.leaseHours) * 3600 - order.usageSeconds;
        uint64 usage = usageSeconds < left ? usageSeconds : uint64(left);
        Settlement.settle(s, order, usage, true);
        Settlement.close(s, order, OrderState.Completed);
        order.usageSeconds += usage;
        order.reportDigest = report;
        emit OrderCompleted(Base.seq(s), orderId, order.usageSeconds, report);
    }

    /// A provider gives up on an order: only machines it left are paid for (per hour), the rest goes back.
    function failOrder(State storage s, uint64 nonce, bytes8 orderId, bytes8 machineId, string calldata reason) external {
        bytes20 sender = Base.begin(s, nonce);
        Base.text(reason, MAX_TEXT, false, "reason");
        Order storage order = Base.order(s, orderId);
        _assignee(s, order, machineId, sender);
        _requireState(order, WHEN_FAILING);
        Settlement.settle(s, order, 0, false);
        Settlement.close(s, order, OrderState.Failed);
        order.failureReason = reason;
        emit OrderFailed(Base.seq(s), orderId, machineId, reason);
    }

    /// The owner withdraws an order that is not running: only machines it left are paid for, the rest goes back.
    function cancelOrder(State storage s, uint64 nonce, bytes8 orderId) external {
        bytes20 sender = Base.begin(s, nonce);
        Order storage order = Base.order(s, orderId);
        if (order.owner != sender) revert NotOrderOwner(orderId, order.owner);
        _requireState(order, WHEN_CANCELLING);
        Settlement.settle(s, order, 0, false);
        Settlement.close(s, order, OrderState.Cancelled);
        emit OrderCancelled(Base.seq(s), orderId);
    }

    // --- checks --------------------------------------------------------------------------------------------

    function _checkOrder(OrderInput calldata input) private pure {
        if (input.datasetOffers.length == 0) revert BadField("dataset_offers");
        Base.distinct(input.datasetOffers, "dataset_offers");
        if (input.params.length > MAX_PARAMS) revert BadField("params");
        if (input.leaseHours < 1 || input.leaseHours > MAX_LEASE_HOURS) revert BadField("lease_hours");
        if (input.replicas != 1) revert BadField("replicas");
        if (input.deposit > MAX_AMOUNT) revert BadField("deposit");
    }

    /// The content offers in the order the contract reads them: model, datasets…, engine.
    function _contentOffers(State storage s, OrderInput calldata input) private view returns (bytes8[] memory content) {
        content = new bytes8[](input.datasetOffers.length + 2);
        content[0] = _offerOfKind(s, input.modelOffer, OfferKind.Model).id;
        for (uint256 i = 0; i < input.datasetOffers.length; i++) {
            content[i + 1] = _offerOfKind(s, input.datasetOffers[i], OfferKind.Dataset).id;
        }
        content[content.length - 1] = _offerOfKind(s, input.engineOffer, OfferKind.Engine).id;
    }

    function _offerOfKind(State storage s, bytes8 offerId, OfferKind kind) private view returns (Offer storage offer) {
        offer = Base.offer(s, offerId);
        if (offer.kind != kind) revert WrongOfferKind(offerId, offer.kind, kind);
        if (!offer.active) revert OfferRetired(kind, offerId);
    }

    function _checkTerms(Offer storage offer, bytes32 engineDigest, uint64 leaseHours) private view {
        Restrictions storage limits = offer.restrictions;
        if (limits.engineDigests.length > 0 && !Assignment.containsDigest(limits.engineDigests, engineDigest)) {
            revert EngineNotAllowed(offer.kind, offer.id, engineDigest);
        }
        if (limits.maxLeaseHours != 0 && leaseHours > limits.maxLeaseHours) {
            revert LeaseTooLong(offer.kind, offer.id, limits.maxLeaseHours, leaseHours);
        }
    }

    /// Only the owner of one of the order's content offers decides on its key, for an assigned machine, while
    /// the order waits for grants; returns the (order, offer, machine) key of that decision.
    function _grantTarget(State storage s, Order storage order, bytes8 offerId, bytes8 machineId, bytes20 sender)
        private
        view
        returns (bytes32)
    {
        Offer storage offer = Base.offer(s, offerId);
        if (offerId != order.modelOffer && offerId != order.engineOffer && !Base.contains(order.datasetOffers, offerId)) {
            revert OfferNotInOrder(offerId, order.id);
        }
        if (offer.owner != sender) revert NotOfferOwner(TO_GRANT, offerId, offer.owner);
        if (!Base.contains(order.machines, machineId)) revert MachineNotAssigned(TO_GRANT, machineId, order.id);
        _requireState(order, WHEN_GRANTING);
        return keccak256(abi.encode(order.id, offerId, machineId));
    }

    function _requireState(Order storage order, uint8 action) private view {
        OrderState state = order.state;
        bool allowed = action == WHEN_GRANTING
            ? state == OrderState.PendingGrants
            : action == WHEN_STARTING
                ? state == OrderState.Ready
                : action == WHEN_COMPLETING
                    ? state == OrderState.Running
                    : action == WHEN_FAILING
                        ? state <= OrderState.Running
                        : state <= OrderState.Ready;
        if (!allowed) revert WrongOrderState(order.id, state, action);
    }

    /// The assigned machine the sender provides: only it may report on the order.
    function _assignee(State storage s, Order storage order, bytes8 machineId, bytes20 sender) private view {
        if (!Base.contains(order.machines, machineId)) revert MachineNotAssigned(TO_REPORT, machineId, order.id);
        Base.providedMachine(s, machineId, sender);
    }

    /// The most an order can owe an offer: what it must escrow up front.
    function _deposit(Pricing storage pricing, uint256 leaseHours, uint256 replicas) private view returns (uint256) {
        if (pricing.model == PricingModel.PerHour) return uint256(pricing.amount) * leaseHours * replicas;
        return pricing.model == PricingModel.Fixed ? pricing.amount : 0;
    }

    // --- assignment ----------------------------------------------------------------------------------------

    /// The machines (and compute offer) an order gets, or NoEligibleMachine with every refusal.
    function _assign(State storage s, bytes8 orderId, bytes8[] memory content, OrderInput calldata input, bytes32 engineDigest)
        private
        view
        returns (bytes8[] memory picked, bytes8 chosen)
    {
        bytes8[] memory computes;
        if (input.hasComputeOffer) {
            computes = new bytes8[](1);
            computes[0] = input.computeOffer;
        } else {
            computes = Assignment.accepting(s, engineDigest, input.leaseHours, bytes8(0));
        }
        (Candidates memory found, Refused[] memory refusals) = Assignment.candidates(s, orderId, content, computes);
        (picked, chosen) = Assignment.draw(blockhash(block.number - 1), orderId, found, input.replicas);
        if (picked.length < input.replicas) revert NoEligibleMachine(picked.length, input.replicas, refusals);
    }
}
